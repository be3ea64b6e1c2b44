"""The docs stand on their own in a user's checkout: every link leads to a file of the
repository (or a section of one), none to the developers' notes outside it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_NOTES = re.compile(r"\.\./shared|shared/reference|osv-memory\.md|osv-real\.md|anchors\.md|"
                    r"jpype-jvm\.md")


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings."""
    heads = re.findall(r"^#+ (.+)$", page.read_text(), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in heads}


def test_every_link_of_the_docs_leads_inside_the_repository() -> None:
    broken = []
    for page in PAGES:
        for target in _LINK.findall(page.read_text()):
            if re.match(r"[a-z]+://|mailto:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if ROOT not in dest.parents and dest != ROOT or not dest.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.name}: {target} (no such section)")
    assert broken == []


def test_the_docs_do_not_send_users_to_notes_they_do_not_have() -> None:
    found = [f"{p.name}:{n}" for p in PAGES
             for n, line in enumerate(p.read_text().splitlines(), 1) if _NOTES.search(line)]
    assert found == []
