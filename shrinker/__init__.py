"""Memory pressure: the shrinker registry and OSv's reclaimer."""

from shrinker.reclaimer import Reclaimer, ReclaimFailed
from shrinker.registry import Shrinker, ShrinkerRegistry

__all__ = ["ReclaimFailed", "Reclaimer", "Shrinker", "ShrinkerRegistry"]
