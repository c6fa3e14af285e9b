"""nfplug init plugin ``orthogonal``: orthogonal weight matrices."""

from nfplug_orthogonal.init import OrthogonalInit

__all__ = ["OrthogonalInit"]
