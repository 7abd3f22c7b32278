# -*- test-case-name: tests.web.test_hardening,tests.web.test_api -*-
"""
The one mapping from domain errors to HTTP: which status each kind of
L{DomainError} becomes.  devpi's envelope around the message is
L{devpi_tx.web.render.envelope}.
"""

from __future__ import annotations

from devpi_tx.model.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Gone,
    Invalid,
    NotAuthenticated,
    NotFound,
    TooLarge,
    UpstreamFailed,
)


class UnsupportedMediaType(DomainError):
    """The client asked for a representation this route does not have."""


STATUS: dict[type[DomainError], int] = {
    Invalid: 400,
    NotAuthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    Gone: 410,
    TooLarge: 413,
    UnsupportedMediaType: 415,
    UpstreamFailed: 502,
}


def status_of(error: DomainError) -> int:
    """The HTTP status of C{error}: its kind's, or the nearest base kind's; 500 for none."""
    for kind in type(error).__mro__:
        status = STATUS.get(kind)
        if status is not None:
            return status
    return 500
