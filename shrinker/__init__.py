"""Memory pressure: the shrinker registry and OSv's reclaimer."""

from shrinker.reclaimer import Reclaimer, ReclaimFailed
from shrinker.registry import Shrinker, ShrinkerError, ShrinkerRegistry

__all__ = ["ReclaimFailed", "Reclaimer", "Shrinker", "ShrinkerError", "ShrinkerRegistry"]
