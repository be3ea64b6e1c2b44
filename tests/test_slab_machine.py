"""The malloc state machine (mmsim.machines.MallocMachine): malloc/calloc/memalign/realloc/free
across CPUs, the early allocator, cross-CPU frees; blocks never overlap, alignment holds, usable
>= requested, pages are conserved and a pool page goes back exactly when OSv's rule says."""

from mmsim.machines import MallocMachine

TestMallocMachine = MallocMachine.TestCase
