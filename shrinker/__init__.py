"""Memory pressure: the shrinker registry and OSv's reclaimer."""

from mmsim.shrinker.reclaimer import Reclaimer, ReclaimFailed
from mmsim.shrinker.registry import Shrinker, ShrinkerError, ShrinkerRegistry

__all__ = ["ReclaimFailed", "Reclaimer", "Shrinker", "ShrinkerError", "ShrinkerRegistry"]
