# -*- test-case-name: tests.test_model -*-
"""
Errors the domain raises with the status and message a client gets.
"""

from __future__ import annotations


class APIError(Exception):
    """
    A request cannot be served; C{status} and C{message} go to the client.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


def bad_request(message: str) -> APIError:
    return APIError(400, message)


def not_found(message: str) -> APIError:
    return APIError(404, message)


def forbidden(message: str) -> APIError:
    return APIError(403, message)
