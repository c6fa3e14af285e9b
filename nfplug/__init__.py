"""nfplug: a neural-field training engine with plugin fields, inits and samplers."""

__version__ = "0.1.0"
