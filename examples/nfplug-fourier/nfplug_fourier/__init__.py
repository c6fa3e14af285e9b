"""nfplug field plugin ``fourier``: an MLP on random Fourier features."""

from nfplug_fourier.field import FourierField

__all__ = ["FourierField"]
