"""Huge (2 MiB) pages: the policy that decides where they are used (reference §6)."""

from mmsim.mm.hugepage.policy import HugePagePolicy, align_down, align_up

__all__ = ["HugePagePolicy", "align_down", "align_up"]
