"""The target layer: hardware profiles, the one cost model, and the NeuronCore legality
table that partition and lower-to-nc both read."""

from .profiles import TargetProfile, get_target

__all__ = ["TargetProfile", "get_target"]
