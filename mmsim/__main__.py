"""`python -m mmsim`: the same as the `mmsim` command (minmem's trials run this way)."""

from mmsim.cli import main

main()
