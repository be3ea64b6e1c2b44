"""Who allocated the memory: blocks and bytes per call site, as heaptrack and massif show them.

A site is the caller's text exactly as the trace writes it (an mtrace log's ``@ ...`` prefix).
Each site counts its live blocks and bytes, and what it allocated over the run (a realloc's new
block counts as allocated by the realloc's caller, and moves the block to that site).

Two snapshots of the live counts are kept, without copying every site at every new peak: the
moment the application's live bytes peaked (the first such moment), and the moment the guest's
used memory peaked (the kernel says when). Each snapshot copies only the sites changed since it
was last taken, so a replay's cost stays proportional to its events, whatever the number of
sites or peaks.
"""

from __future__ import annotations

import re
from itertools import chain
from typing import Any

__all__ = ["TOP_SITES", "AllocSites", "function_of"]

#: entries in each list of the summary's ``malloc.sites`` and ``malloc.functions``
TOP_SITES = 20

# glibc's mtrace writes a caller as file:(symbol+offset)[address], file:(symbol)[address],
# file:[address] or [address]; the offset may be negative (symbol-offset)
_FUNCTION = re.compile(r"\((?P<name>[^()]*?)(?:[+-](?:0x)?[0-9a-fA-F]+)?\)\[[^\[\]]*\]$")


def function_of(site: str) -> str | None:
    """The function a site names (``PyUnicode_New`` of ``python3.11:(PyUnicode_New+2f0)[0x..]``),
    or None if the trace gave only an address."""
    m = _FUNCTION.search(site)
    return (m.group("name") or None) if m else None


def split_site(site: str) -> tuple[str, str]:
    """(file, the rest) of ``file:(symbol+off)[addr]`` or ``file:[addr]``; a site that names
    no file (a native trace's ``site=parse_config``) is ``("", site)``."""
    for sep in (":(", ":["):
        i = site.find(sep)
        if i > 0:
            return site[:i], site[i + 1:]
    return "", site


class AllocSites:
    """Per site ``[blocks, bytes, freed_blocks, freed_bytes]`` (:attr:`stats`: allocated and
    freed over the run; live is the difference, so an allocation touches two counters, not
    four); the owner updates the lists in place (malloc's hot path) and adds the site to
    :attr:`dirty` when it does."""

    def __init__(self) -> None:
        self.stats: dict[str, list[int]] = {}
        self.dirty: set[str] = set()  # changed since the last snapshot of either kind
        self._stale_live: set[str] = set()  # changed since the live-peak snapshot, not in dirty
        self._stale_use: set[str] = set()
        self._at_live_peak: dict[str, tuple[int, int]] = {}
        self._at_use_peak: dict[str, tuple[int, int]] = {}

    def entry(self, site: str) -> list[int]:
        st = self.stats.get(site)
        if st is None:
            st = self.stats[site] = [0, 0, 0, 0]
        return st

    def snapshot_live_peak(self) -> None:
        """The application's live bytes are at their peak now (before anything lowers them)."""
        self._snapshot(self._at_live_peak, self._stale_live, self._stale_use)

    def snapshot_use_peak(self) -> None:
        """The guest's used memory is at its peak now."""
        self._snapshot(self._at_use_peak, self._stale_use, self._stale_live)

    def _snapshot(self, snap: dict[str, tuple[int, int]], stale: set[str],
                  other: set[str]) -> None:
        stats = self.stats
        dirty = self.dirty
        for site in chain(dirty, stale):
            st = stats[site]
            if st[0] != st[2]:
                snap[site] = (st[0] - st[2], st[1] - st[3])
            else:
                snap.pop(site, None)
        other |= dirty
        stale.clear()
        dirty.clear()

    # -- results ------------------------------------------------------------------------
    def summary(self, top: int = TOP_SITES) -> dict[str, list[dict[str, Any]]]:
        """``at_peak``, ``at_end`` and ``allocated``: the ``top`` sites by bytes, each
        ``{"site", "blocks", "bytes"}``, largest first (ties: more blocks, then by name)."""
        return {
            "at_peak": _top(self._at_live_peak.items(), top, "site"),
            "at_end": _top(((s, (st[0] - st[2], st[1] - st[3])) for s, st in self.stats.items()
                            if st[0] != st[2]), top, "site"),
            "allocated": _top(((s, (st[0], st[1])) for s, st in self.stats.items()), top, "site"),
        }

    def by_function(self, top: int = TOP_SITES) -> dict[str, list[dict[str, Any]]]:
        """The same three views with the sites of one function added up (sites that name no
        function are left out)."""
        live_peak: dict[str, list[int]] = {}
        end: dict[str, list[int]] = {}
        allocated: dict[str, list[int]] = {}
        names = {s: function_of(s) for s in self.stats}
        for site, (blocks, nbytes) in self._at_live_peak.items():
            _add(live_peak, names[site], blocks, nbytes)
        for site, st in self.stats.items():
            name = names[site]
            if st[0] != st[2]:
                _add(end, name, st[0] - st[2], st[1] - st[3])
            _add(allocated, name, st[0], st[1])
        return {"at_peak": _top(_pairs(live_peak), top, "function"),
                "at_end": _top(_pairs(end), top, "function"),
                "allocated": _top(_pairs(allocated), top, "function")}

    def at_use_peak(self, top: int) -> list[dict[str, Any]]:
        """The top sites live when the guest's used memory peaked."""
        return _top(self._at_use_peak.items(), top, "site")

    def folded(self, unattributed_bytes: int) -> list[tuple[str, int]]:
        """Bytes allocated per stack, in the folded format of flamegraph.pl, speedscope and
        inferno (``frame;frame`` and a count): the file, then the function (or the address)
        of each site (a site that names no file is one frame); ``unattributed_bytes`` (calls with no site) as ``[unknown]``."""
        stacks: dict[str, int] = {}
        for site, st in self.stats.items():
            if st[1]:
                module, rest = split_site(site)
                frame = _frame(function_of(site) or rest)
                stack = f"{_frame(module)};{frame}" if module else frame
                stacks[stack] = stacks.get(stack, 0) + st[1]
        if unattributed_bytes:
            stacks["[unknown]"] = stacks.get("[unknown]", 0) + unattributed_bytes
        return sorted(stacks.items())


def _frame(text: str) -> str:
    """A frame's name in a folded line: no ';' (the separator) and no space before the count."""
    return text.replace(";", ":").replace(" ", "_") or "[unknown]"


def _add(into: dict[str, list[int]], name: str | None, blocks: int, nbytes: int) -> None:
    if name is None:
        return
    acc = into.get(name)
    if acc is None:
        into[name] = [blocks, nbytes]
    else:
        acc[0] += blocks
        acc[1] += nbytes


def _pairs(d: dict[str, list[int]]) -> Any:
    return ((k, (v[0], v[1])) for k, v in d.items())


def _top(items: Any, top: int, key: str) -> list[dict[str, Any]]:
    ranked = sorted(items, key=lambda kv: (-kv[1][1], -kv[1][0], kv[0]))[:top]
    return [{key: name, "blocks": blocks, "bytes": nbytes} for name, (blocks, nbytes) in ranked]
