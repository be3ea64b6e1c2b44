"""Mapping permissions as the simulator sees them (a view of the x86 PTE bits)."""

from __future__ import annotations

import enum


class Perm(enum.IntFlag):
    """Access rights of a present mapping.

    ``NONE`` is still a *present* mapping: OSv implements PROT_NONE as P=1 plus the
    reserved bit 51, so the entry exists (and must be unmapped/freed) but any access
    takes an RSVD fault.
    """

    NONE = 0
    R = 1
    W = 2
    X = 4
    RW = R | W
    RX = R | X
    RWX = R | W | X
