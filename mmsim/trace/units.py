"""Sizes and durations as traces write them: the kernel's own parsers (one grammar everywhere,
configuration files, command line and traces alike)."""

from kernel.units import (  # noqa: F401
    LIMIT,
    format_duration,
    format_size,
    format_size_exact,
    parse_duration,
    parse_int,
    parse_size,
)

__all__ = ["LIMIT", "format_duration", "format_size", "format_size_exact", "parse_duration",
           "parse_int", "parse_size"]
