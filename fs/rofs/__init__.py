"""OSv's read-only file system (ROFS) and its file cache (fs/rofs/rofs_cache.cc)."""

from mmsim.fs.rofs.fs import SEGMENT, RofsFile, RofsFileSystem, segment_pages
from mmsim.fs.rofs.mapping import RofsMappings

__all__ = ["SEGMENT", "RofsFile", "RofsFileSystem", "RofsMappings", "segment_pages"]
