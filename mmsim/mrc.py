"""`mmsim mrc`'s curves without one replay per size: LRU's from one pass of stack distances,
and sampled ones for every policy, from one read of a block trace.

- ``stack``: LRU is a stack algorithm, so one pass (mmsim.stack_distance) gives its miss
  ratio at every size, identical to the replays: a block trace's request is one access to a
  record of the record size (the trace's block, or ``block_size``), and an LRU of c bytes
  holds c // record size of them (fs/zfs_arc/policy_lru.py).
- ``sampled``: the requests of a spatial sample of the blocks (SHARDS: a fixed rate R of the
  blocks, chosen by a fixed hash). LRU's curve comes from the sample's stack distances scaled
  by 1/R (SHARDS, FAST'15); any other policy's from *miniature simulations* (Waldspurger et
  al., ATC'17): the sample replayed through the same guest at c·R per size c. Either way the
  sample's misses, scaled by 1/R, estimate the whole trace's, over all its requests (SHARDS-adj,
  as libCacheSim's profiler): not over the sample's requests, which a few hot blocks, each in
  the sample or not, move far from R times the trace's.
- ``exact``: one replay per size and policy (the sweep); the only method for traces that are
  not block traces, and for what the guest's memory itself does to the cache.
"""

from __future__ import annotations

import tempfile
from array import array
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO

from mmsim.api import InputError, boot, configure, replay_ops
from mmsim.kernel import OutOfMemory, parse_size
from mmsim.stack_distance import MODULUS, StackDistances, sample_positions, sample_threshold
from mmsim.sweep_points import STATUS_OK, STATUS_OOM
from mmsim.trace import TraceError, read_trace
from mmsim.trace.blocktrace import BLOCK_FORMATS, BLOCK_READ, BlockReads

EXACT, STACK, SAMPLED = "exact", "stack", "sampled"
METHODS = ("auto", EXACT, STACK, SAMPLED)
#: the rate of --method sampled without --sample-rate (SHARDS' usual 1 %)
DEFAULT_RATE = 0.01
#: requests per operation of a miniature simulation's replay (as the block readers batch them)
_BATCH = 256

__all__ = ["BLOCK_FORMATS", "DEFAULT_RATE", "EXACT", "METHODS", "SAMPLED", "STACK",
           "choose_methods", "current_rows", "estimated_misses", "one_pass_rows", "parse_rate"]


def parse_rate(text: str) -> float:
    """A sampling rate in (0, 1]; ValueError saying what is wrong."""
    try:
        rate = float(text)
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None
    sample_threshold(rate)  # the range, and the smallest rate the hash can keep
    return rate


def choose_methods(policies: list[str], method: str, rate: float | None,
                   block_trace: bool) -> dict[str, str]:
    """The method of each policy. ``auto``: sampled for all with a rate, else stack for lru
    (on a block trace) and exact for the rest. ValueError (naming the option) for a method
    that cannot give a policy's curve."""
    if method == "auto":
        if rate is not None:
            method = SAMPLED
        else:
            return {p: STACK if p == "lru" and block_trace else EXACT for p in policies}
    if rate is not None and method != SAMPLED:
        raise ValueError(f"--sample-rate goes with --method sampled, not {method}")
    if method != EXACT and not block_trace:
        raise ValueError(f"--method {method} needs a block trace ({', '.join(BLOCK_FORMATS)});"
                         " use --method exact")
    if method == STACK and policies != ["lru"]:
        others = ", ".join(p for p in policies if p != "lru")
        raise ValueError(f"--method stack gives LRU's curve only ({others}: not stack "
                         "algorithms; use --method exact or sampled)")
    return dict.fromkeys(policies, method)


def estimated_misses(sample_misses: int, requests: int, threshold: int) -> int:
    """The whole trace's misses estimated from a sample's at rate threshold/MODULUS: the
    sample's scaled by 1/R, to the nearest whole, at most all ``requests`` (a sample holding
    more than its share of cold blocks can scale past them). Divided by all the requests, this
    is SHARDS-adj's miss ratio (Waldspurger et al., FAST'15: the difference between R times the
    requests and the sample's requests counted as hits below the smallest cache), which for a
    skewed trace errs several times less than the sample's misses over its own requests."""
    return min(requests, (sample_misses * MODULUS + threshold // 2) // threshold)


def _row_method(row: dict[str, Any]) -> tuple[str, float | None]:
    rate = row.get("mrc.sample_rate")
    return str(row.get("mrc.method") or EXACT), None if rate in (None, "") else float(rate)


def current_rows(methods: dict[str, str], rate: float | None) -> Callable[[dict[str, Any]], bool]:
    """Whether a row of the output was made the way this run makes its point (a row of
    another method or rate runs again)."""
    def keep(row: dict[str, Any]) -> bool:
        method = methods.get(str(row.get("cache_policy")), EXACT)
        if method == SAMPLED and row.get("mrc.sampled_requests") in (None, ""):
            return False  # from before the estimate was scaled to the whole trace: again
        return _row_method(row) == (method, rate if method == SAMPLED else None)

    return keep


class _Pass:
    """What one read of the trace gathers for the points: the stack distances of every
    request, those of the sample, and the sample itself (for the miniature simulations),
    spooled to a temporary file as (line, block) pairs, so that memory does not grow with
    the trace's length."""

    def __init__(self, stack: bool, shards: bool, keep_sample: bool,
                 threshold: int) -> None:
        self.full = StackDistances() if stack else None
        self.shards = StackDistances() if shards else None
        self.keep_sample = keep_sample
        self.threshold = threshold
        self._spool: BinaryIO | None = tempfile.TemporaryFile() if keep_sample else None  # noqa: SIM115
        self.device: Any = None
        self.requests = 0  # all of them
        self.sampled = 0  # the sample's

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()

    def read(self, trace: str, fmt: str) -> None:
        """Feed every request; InputError for a trace that does not read, or is not a block
        trace (its first operation creates the device, every other is a batch of reads)."""
        sample = self.shards is not None or self.keep_sample
        t = self.threshold
        try:
            for op in read_trace(trace, fmt):
                if op.kind != BLOCK_READ:
                    if self.device is not None or op.kind != "create" or not op.align:
                        raise InputError(f"{trace}: not a block trace (a '{op.kind}' "
                                         "operation); use --method exact")
                    self.device = op
                    continue
                self.requests += len(op.blocks)
                if self.full is not None:
                    self.full.feed(op.blocks)
                if sample:
                    kept = sample_positions(op.blocks, t)
                    blocks = [op.blocks[i] for i in kept]
                    self.sampled += len(blocks)
                    if self.shards is not None:
                        self.shards.feed(blocks)
                    if self._spool is not None and kept:
                        pairs = array("q", bytes(16 * len(kept)))
                        pairs[0::2] = array("q", [op.lines[i] for i in kept])
                        pairs[1::2] = array("q", blocks)
                        pairs.tofile(self._spool)
        except TraceError as e:
            raise InputError(str(e)) from None

    def sample_ops(self) -> Iterable[Any]:
        """The sample as a block trace's operations: the device, then batches of reads."""
        assert self._spool is not None
        yield self.device
        self._spool.seek(0)
        while chunk := self._spool.read(16 * _BATCH):
            pairs = array("q")
            pairs.frombytes(chunk)
            yield BlockReads(pairs[0::2].tolist(), pairs[1::2].tolist(), self.device.align)


def one_pass_rows(trace: str, fmt: str, heads: list[dict[str, Any]], methods: dict[str, str],
                  rate: float | None) -> list[dict[str, Any]]:
    """The rows of the points ``heads`` (each a row's head: trace, point, cache_policy,
    arc_size, ...), by their policy's method (stack or sampled), from one read of ``trace``.

    ``rate`` is the sampling rate (None without a sampled policy). ``arc.hits`` and
    ``arc.misses`` count all the requests (``mrc.requests``): as the stack distances say, or
    (sampled) estimated from the sample's misses (estimated_misses), whose own requests and
    misses are ``mrc.sampled_requests`` and ``mrc.sampled_misses``."""
    if not heads:
        return []
    policies = {h["cache_policy"] for h in heads}
    threshold = sample_threshold(rate) if rate is not None else MODULUS
    scan = _Pass(stack=any(methods[p] == STACK for p in policies),
                 shards=methods.get("lru") == SAMPLED and "lru" in policies,
                 keep_sample=any(methods[p] == SAMPLED and p != "lru" for p in policies),
                 threshold=threshold)
    try:
        scan.read(trace, fmt)
        return _rows(scan, trace, heads, methods, rate, threshold)
    finally:
        scan.close()


def _rows(scan: _Pass, trace: str, heads: list[dict[str, Any]], methods: dict[str, str],
          rate: float | None, threshold: int) -> list[dict[str, Any]]:
    block = scan.device.align if scan.device is not None else 0
    rows = []
    for head in heads:
        policy, size = head["cache_policy"], int(head["arc_size"])
        record = parse_size(head["block_size"]) if head.get("block_size") else block
        method = methods[policy]
        figures: dict[str, Any] = {"mrc.method": method}
        status = STATUS_OK
        if method == STACK:
            assert scan.full is not None
            requests = scan.full.requests
            misses = scan.full.misses([size // record])[0] if record else 0
        else:
            requests = scan.requests
            if policy == "lru":  # SHARDS: hit iff distance / R < k, i.e. distance < k·T/P
                assert scan.shards is not None
                k = size // record if record else 0
                sampled_misses = scan.shards.misses([-(-k * threshold // MODULUS)])[0]
                holds = k > 0
            else:
                c_r = (size * threshold + MODULUS // 2) // MODULUS  # c·R, rounded
                sampled_misses, status = _miniature(scan, trace, head, c_r, record)
                holds = bool(record) and c_r >= record
            if holds:
                misses = estimated_misses(sampled_misses, requests, threshold)
            else:  # a cache that holds nothing: every request misses, not ~1/R of the sample's
                misses = requests
            figures.update({"mrc.sample_rate": rate, "mrc.sampled_requests": scan.sampled,
                            "mrc.sampled_misses": sampled_misses})
        hits = requests - misses
        if method == SAMPLED and not scan.sampled:  # an empty sample: no estimate, no ratio
            hits = misses = 0
        figures.update({"arc.policy": policy, "arc.hits": hits, "arc.misses": misses,
                        "arc.hit_ratio": hits / requests if hits + misses else 0.0,
                        "mrc.requests": requests})
        rows.append({**head, "status": status, "error": None, **figures})
    return rows


def _miniature(scan: _Pass, trace: str, head: dict[str, Any], size: int,
               record: int) -> tuple[int, str]:
    """(misses, status) of the sample replayed through the point's guest with an ARC of
    ``size`` (c·R); smaller than one record, nothing is cached."""
    if size < record or not scan.sampled:
        return scan.sampled, STATUS_OK
    settings = {k: v for k, v in head.items() if k not in ("trace", "point")}
    kernel = boot(configure(None, {**settings, "arc_size": size}))
    status = STATUS_OK
    try:
        replay_ops(kernel, scan.sample_ops(), trace)
    except OutOfMemory:
        status = STATUS_OOM
    return int(kernel.summary()["arc"]["misses"]), status
