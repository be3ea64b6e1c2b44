"""x86-64 page tables of the simulated OSv, stored as extents (reference §6)."""

from .extent import MappedExtent
from .page_tables import PageTables
from .perm import Perm
from .source import CountingTablePageSource, TablePageSource

__all__ = ["CountingTablePageSource", "MappedExtent", "PageTables", "Perm", "TablePageSource"]
