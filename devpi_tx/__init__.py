"""devpi_tx: a private Python package index and PyPI caching server on Twisted."""

__version__ = "0.1.0"
