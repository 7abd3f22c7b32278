"""devpi_tx: a private Python package index and PyPI caching server on Twisted."""

__version__ = "0.1.0"

DEVPI_SERVER_VERSION = "6.20.3"
"""The devpi-server whose wire protocol this server speaks, as it reports itself to clients."""
