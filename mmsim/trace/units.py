"""Sizes and durations as traces write them: the kernel's own parsers (one grammar everywhere,
configuration files, command line and traces alike)."""

from mmsim.kernel import units as _units

LIMIT = _units.LIMIT
format_duration = _units.format_duration
format_size = _units.format_size
format_size_exact = _units.format_size_exact
parse_duration = _units.parse_duration
parse_int = _units.parse_int
parse_size = _units.parse_size

__all__ = ["LIMIT", "format_duration", "format_size", "format_size_exact", "parse_duration",
           "parse_int", "parse_size"]
