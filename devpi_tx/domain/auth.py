# -*- test-case-name: tests.web.test_api,tests.model.test_model -*-
"""
Passwords and login tokens.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Mapping
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

TOKEN_EXPIRATION = 36000

# passlib's argon2 defaults, which devpi-server stores (spec 2.1)
_hasher = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4, hash_len=32, salt_len=16)


def set_password_cost(time_cost: int, memory_cost: int, parallelism: int) -> None:
    """
    The argon2 cost of new password hashes (devpi's hidden C{--argon2-*}
    options); stored hashes carry their own parameters.
    """
    global _hasher
    _hasher = PasswordHasher(
        time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism, hash_len=32, salt_len=16
    )


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(record: Mapping[str, Any], password: str) -> bool:
    """
    Check C{password} against a stored user record: argon2 PHC hashes as
    devpi writes them, and the salted sha256 of devpi before 4.0.
    """
    pwhash = record.get("pwhash")
    if not pwhash or not isinstance(pwhash, str):
        return False
    salt = record.get("pwsalt")
    if salt:
        expected = hashlib.sha256((salt + password).encode("utf-8")).hexdigest()
        return hmac.compare_digest(expected, pwhash)
    try:
        return bool(_hasher.verify(pwhash, password))
    except (VerificationError, InvalidHashError):
        return False


def load_secret(path: str | None, serverdir: str) -> bytes:
    """
    The signing secret: the contents of C{path}; else C{.secret} in the
    server dir, created on first use so tokens survive restarts.

    @raise ValueError: the secret file is unusable.
    """
    if path is None:
        path = os.path.join(serverdir, ".secret")
        if not os.path.exists(path):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(base64.b64encode(secrets.token_bytes(32)))
    try:
        with open(path, "rb") as f:
            data = f.read().strip()
    except OSError as e:
        raise ValueError(f"cannot read secret file {path}: {e.strerror}") from e
    if os.stat(path).st_mode & 0o077:
        raise ValueError(f"secret file {path} must not be accessible by group or others")
    if len(data) < 32 or len(set(data)) < 6:
        raise ValueError(f"secret file {path} must hold at least 32 bytes of random data")
    return hashlib.sha256(b"devpi-tx-token" + data).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Stateless login tokens: C{payload.timestamp.signature}."""

    def __init__(self, secret: bytes, expiration: int = TOKEN_EXPIRATION) -> None:
        self._secret = secret
        self.expiration = expiration

    def _sign(self, message: str) -> str:
        return _b64(hmac.new(self._secret, message.encode("utf-8"), hashlib.sha256).digest())

    def issue(self, user: str, now: float | None = None) -> str:
        stamp = int(time.time() if now is None else now)
        message = _b64(json.dumps([user, []]).encode("utf-8")) + "." + _b64(stamp.to_bytes(8, "big"))
        return message + "." + self._sign(message)

    def verify(self, user: str, token: str, now: float | None = None) -> bool | None:
        """
        C{True} for a valid token of C{user}; C{False} for a well-signed one
        that expired or names someone else; C{None} if C{token} is no token
        of ours (so it may be a password).
        """
        parts = token.split(".")
        if len(parts) != 3:
            return None
        message = parts[0] + "." + parts[1]
        if not hmac.compare_digest(self._sign(message).encode(), parts[2].encode("utf-8")):
            return None
        try:
            payload = json.loads(_unb64(parts[0]))
            stamp = int.from_bytes(_unb64(parts[1]), "big")
        except (ValueError, binascii.Error):
            return False
        current = time.time() if now is None else now
        if not isinstance(payload, list) or not payload or payload[0] != user:
            return False
        return bool(stamp <= current < stamp + self.expiration)


def parse_basic(value: bytes) -> tuple[str, str] | None:
    """Decode C{base64(user:secret)} as UTF-8, else Latin-1."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    if ":" not in text:
        return None
    user, secret = text.split(":", 1)
    return user, secret
