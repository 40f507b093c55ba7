"""diffnotes: the package every chapter of the diffusion study book shares."""

__version__ = "0.1.0"
