"""The mappings state machine (mmsim.machines.VmMachine): mmap/munmap/mprotect/madvise/mremap/
touch against a per-page model; VMAs split and never merge, resident <= mapped, every resident
page in exactly one VMA, page tables agree with the VMAs, pages conserved."""

from mmsim.machines import VmMachine

TestVmMachine = VmMachine.TestCase
