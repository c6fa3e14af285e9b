"""nfplug sampler plugin ``patch``: random square patches of trainable pixels."""

from nfplug_patches.sampler import PatchSampler

__all__ = ["PatchSampler"]
