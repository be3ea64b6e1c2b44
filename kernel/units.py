"""Sizes and durations as humans write them in traces and on the command line.

All parsers are exact (integer arithmetic, no floats) so that ``1.5G`` is exactly
1610612736 bytes and a value that is not a whole number of bytes or nanoseconds is
rejected rather than silently rounded. Values are bounded below 2**64 because the
simulated machine is 64-bit: anything larger cannot be an address, a length or a time.
"""

from __future__ import annotations

import functools
import re

__all__ = [
    "LIMIT",
    "format_duration",
    "format_size",
    "format_size_exact",
    "parse_duration",
    "parse_int",
    "parse_size",
]

LIMIT = 1 << 64
"""Every size, count and duration must be below this (64-bit machine)."""

_SIZE_UNITS: dict[str, int] = {"": 1, "B": 1}
for _i, _letter in enumerate("KMGT", start=1):
    for _spelling in (_letter, _letter.lower(), _letter + "iB"):
        _SIZE_UNITS[_spelling] = 1 << (10 * _i)

_DURATION_UNITS: dict[str, int] = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}

# A number (decimal with optional fraction, or hex) followed by an optional unit.
_NUMBER_RE = re.compile(
    r"""(?P<neg>-)?
        (?: 0[xX](?P<hex>[0-9a-fA-F]+)
          | (?P<int>[0-9]*)(?:\.(?P<frac>[0-9]+))? )
        \s*(?P<unit>[A-Za-z]*)""",
    re.VERBOSE,
)

# More significant digits than this cannot be below 2**64 (which has 20 digits).
_MAX_DIGITS = 24


def _scaled(int_part: str, frac_part: str, scale: int) -> tuple[int, bool]:
    """(int_part.frac_part * scale rounded down, whether it was exact)."""
    whole = int(int_part or "0") * scale
    if not frac_part:
        return whole, True
    frac_part = frac_part.rstrip("0")
    if not frac_part:
        return whole, True
    if len(frac_part) > 64:  # 10**k cannot divide frac * scale for any scale we use
        return whole, False
    numerator = int(frac_part) * scale
    denominator = 10 ** len(frac_part)
    return whole + numerator // denominator, numerator % denominator == 0


def _split(text: str) -> re.Match[str] | None:
    m = _NUMBER_RE.fullmatch(text.strip())
    if m is None or (m["hex"] is None and not m["int"] and not m["frac"]):
        return None
    return m


def _show(text: str) -> str:
    """The offending text, cut short: error messages must stay one readable line."""
    return text if len(text) <= 40 else text[:37] + "..."


def parse_int(text: str, what: str = "size") -> int:
    """Parse a plain non-negative integer (decimal or 0x hex), no unit, below 2**64.

    Used for counts such as ``calloc N`` and CPU numbers, where a unit would be a typo.
    """
    m = _split(text)
    if m is None or m["unit"] or m["frac"] is not None:
        raise ValueError(f"bad {what} '{_show(text)}'")
    if m["neg"]:
        raise ValueError(f"negative {what} '{_show(text)}'")
    digits = m["hex"] if m["hex"] is not None else m["int"]
    if len(digits.lstrip("0")) > _MAX_DIGITS:
        raise ValueError(f"{what} '{_show(text)}' is too large (must be < 2**64)")
    value = int(digits, 16 if m["hex"] is not None else 10)
    if value >= LIMIT:
        raise ValueError(f"{what} '{_show(text)}' is too large (must be < 2**64)")
    return value


def parse_size(text: str | int, what: str = "size") -> int:
    """Parse a byte count: ``4096``, ``0x1000``, ``4K``, ``4KiB``, ``4k``, ``1.5G``, or an int
    (a YAML or JSON number) in range.

    Suffixes K/M/G/T are binary (powers of 1024) in every spelling; ``KB`` and friends
    are rejected because they are ambiguous. ``what`` names the quantity in errors
    (e.g. "offset"), so messages say what was wrong, not just that something was.
    """
    if type(text) is str:
        return _parse_size_text(text, what)
    if isinstance(text, bool) or not isinstance(text, int):
        raise ValueError(f"bad {what} {text!r}")
    if not 0 <= text < LIMIT:
        raise ValueError(f"{what} {text} out of range")
    return text


@functools.lru_cache(maxsize=4096)  # traces repeat the same few sizes millions of times
def _parse_size_text(text: str, what: str) -> int:
    if text.isascii() and text.isdigit() and len(text) < 20:  # fast path: plain bytes
        return int(text)
    m = _split(text)
    if m is None:
        raise ValueError(f"bad {what} '{_show(text)}'")
    unit = m["unit"]
    if unit not in _SIZE_UNITS:
        hint = (
            f"; use {unit[0].upper()} or {unit[0].upper()}iB" if unit[:1].upper() in "KMGT" else ""
        )
        raise ValueError(f"bad {what} '{_show(text)}' (unknown unit '{_show(unit)}'{hint})")
    if m["neg"]:
        raise ValueError(f"negative {what} '{_show(text)}'")
    if m["hex"] is not None:
        if unit:
            raise ValueError(f"bad {what} '{_show(text)}' (hex takes no unit)")
        if len(m["hex"].lstrip("0")) > _MAX_DIGITS:
            raise ValueError(f"{what} '{_show(text)}' is too large (must be < 2**64)")
        value = int(m["hex"], 16)
    else:
        if len((m["int"] or "").lstrip("0")) > _MAX_DIGITS:
            raise ValueError(f"{what} '{_show(text)}' is too large (must be < 2**64)")
        value, exact = _scaled(m["int"], m["frac"] or "", _SIZE_UNITS[unit])
        if not exact:
            raise ValueError(f"{what} '{_show(text)}' is not a whole number of bytes")
    if value >= LIMIT:
        raise ValueError(f"{what} '{_show(text)}' is too large (must be < 2**64)")
    return value


def parse_duration(text: str | float, what: str = "duration") -> int:
    """Parse a duration into integer nanoseconds: ``250us``, ``1.5ms``, ``2s``, ``3`` (= 3 s),
    or a number of seconds (a YAML or JSON number).

    Integer nanoseconds keep simulated time exact and totally ordered, which floats
    would not after millions of additions.
    """
    if not isinstance(text, str):
        if isinstance(text, bool) or not isinstance(text, (int, float)):
            raise ValueError(f"bad {what} {text!r}")
        text = str(text)
    m = _split(text)
    if m is None or m["hex"] is not None:
        raise ValueError(f"bad {what} '{_show(text)}'")
    unit = m["unit"] or "s"
    if unit not in _DURATION_UNITS:
        raise ValueError(f"bad {what} '{_show(text)}' (unit must be ns, us, ms or s)")
    if m["neg"]:
        raise ValueError(f"negative {what} '{_show(text)}'")
    if len((m["int"] or "").lstrip("0")) > _MAX_DIGITS:
        raise ValueError(f"{what} '{_show(text)}' is too large (must be < 2**64 ns)")
    value, exact = _scaled(m["int"], m["frac"] or "", _DURATION_UNITS[unit])
    if not exact:
        raise ValueError(f"{what} '{_show(text)}' is not a whole number of nanoseconds")
    if value >= LIMIT:
        raise ValueError(f"{what} '{_show(text)}' is too large (must be < 2**64 ns)")
    return value


_HUMAN_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def format_size(n: int) -> str:
    """Human-readable size for reports: ``512 B``, ``4 KiB``, ``1.5 GiB`` (lossy, 3 digits)."""
    sign, n = ("-", -n) if n < 0 else ("", n)
    exp = 0
    while exp + 1 < len(_HUMAN_UNITS) and n >= 1 << (10 * (exp + 1)):
        exp += 1
    if exp == 0:
        return f"{sign}{n} B"
    value = n / (1 << (10 * exp))
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    if text == "1024" and exp + 1 < len(_HUMAN_UNITS):  # 1048575 B rounds up to 1 MiB
        exp, text = exp + 1, "1"
    return f"{sign}{text} {_HUMAN_UNITS[exp]}"


def format_size_exact(n: int) -> str:
    """Exact, parseable spelling for writing traces: ``4K``, ``1536``, ``2G``.

    Uses the largest binary suffix that divides ``n``, so output is short yet
    ``parse_size(format_size_exact(n)) == n`` always.
    """
    if not 0 <= n < LIMIT:
        raise ValueError(f"size {n} is out of range (0 <= size < 2**64)")
    for exp, letter in ((4, "T"), (3, "G"), (2, "M"), (1, "K")):
        unit = 1 << (10 * exp)
        if n >= unit and n % unit == 0:
            return f"{n // unit}{letter}"
    return str(n)


def format_duration(ns: int) -> str:
    """Exact, parseable spelling of a duration: ``0s``, ``1.5ms``, ``250us``, ``7ns``."""
    if not 0 <= ns < LIMIT:
        raise ValueError(f"duration {ns} ns is out of range (0 <= ns < 2**64)")
    if ns == 0:
        return "0s"
    for unit, scale in (("s", 1_000_000_000), ("ms", 1_000_000), ("us", 1_000)):
        if ns >= scale:
            whole, rest = divmod(ns, scale)
            if rest == 0:
                return f"{whole}{unit}"
            digits = len(str(scale)) - 1
            return f"{whole}.{rest:0{digits}d}".rstrip("0") + unit
    return f"{ns}ns"
