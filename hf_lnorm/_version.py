"""The package version, read by setuptools at build time and by ``hf_lnorm.__version__``."""

__version__ = "0.2.0"
