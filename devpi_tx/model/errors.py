# -*- test-case-name: tests.model.test_model -*-
"""
Errors the domain raises: what went wrong, in a message for the client.
Which HTTP status each becomes is the web layer's choice (L{devpi_tx.web.errors}).
"""

from __future__ import annotations


class DomainError(Exception):
    """A request cannot be done; C{message} says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Invalid(DomainError):
    """The request is malformed or breaks a rule (a name, a configuration, metadata)."""


class NotAuthenticated(DomainError):
    """The request needs credentials, or the ones given are wrong."""


class Forbidden(DomainError):
    """Whoever asks may not do this."""


class NotFound(DomainError):
    """What the request names does not exist."""


class Conflict(DomainError):
    """What the request would create exists already, or may not be overwritten."""


class Gone(DomainError):
    """What the request names existed and was deleted."""


class TooLarge(DomainError):
    """What the client sent is larger than this server takes."""


class UpstreamFailed(DomainError):
    """The upstream index failed, or sent something that cannot be used."""
