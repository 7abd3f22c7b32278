from twisted.application.service import ServiceMaker

devpi = ServiceMaker(
    "devpi_tx",
    "devpi_tx.tap",
    "A private Python package index and PyPI caching server.",
    "devpi",
)
