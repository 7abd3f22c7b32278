# -*- test-case-name: tests.web.test_api -*-
"""
Who a request speaks for: tokens and passwords from C{X-Devpi-Auth} or
C{Authorization: Basic} (spec 2.2), with user records and successful
password checks cached in memory and dropped when a user changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest

from devpi_tx.domain import keys
from devpi_tx.domain.auth import TokenSigner, parse_basic, verify_password
from devpi_tx.model.policy import ANONYMOUS, Identity
from devpi_tx.store.interfaces import IStore

_MAX_CACHE = 4096


class Authenticator:
    def __init__(
        self,
        store: IStore,
        signer: TokenSigner,
        run_in_thread: Callable[..., Deferred[Any]],
    ) -> None:
        self._store = store
        self._signer = signer
        self._run = run_in_thread
        self._users: dict[str, dict[str, Any] | None] = {}
        self._verified: dict[tuple[str, str, str], bool] = {}
        store.subscribe(self._changed)

    def _changed(self, serial: int, changes: dict[str, Any]) -> None:
        for key in changes:
            if key.startswith(keys.USERS):
                self._users.pop(keys.name_in(key, keys.USERS), None)

    async def user_record(self, name: str) -> dict[str, Any] | None:
        if name not in self._users:
            record = await self._store.read(lambda tx: tx.get(keys.user(name)))
            if len(self._users) > _MAX_CACHE:
                self._users.clear()
            self._users[name] = record
        return self._users[name]

    async def check_password(self, name: str, password: str) -> bool:
        record = await self.user_record(name)
        if record is None:
            return False
        cache_key = (
            name,
            str(record.get("pwhash")),
            hashlib.sha256(password.encode("utf-8")).hexdigest(),
        )
        if cache_key not in self._verified:
            ok = await self._run(verify_password, record, password)
            if len(self._verified) > _MAX_CACHE:
                self._verified.clear()
            self._verified[cache_key] = ok
        return self._verified[cache_key]

    async def identify(self, request: IRequest) -> Identity:
        cached = getattr(request, "_devpi_identity", None)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        identity = await self._identify(request)
        request._devpi_identity = identity  # type: ignore[attr-defined]
        return identity

    async def _identify(self, request: IRequest) -> Identity:
        creds = None
        header = request.getHeader(b"X-Devpi-Auth")
        if header:
            creds = parse_basic(header)
        else:
            auth = request.getHeader(b"Authorization")
            if auth and auth[:6].lower() == b"basic ":
                creds = parse_basic(auth[6:])
        if creds is None:
            return ANONYMOUS
        user, secret = creds
        valid = self._signer.verify(user, secret)
        if valid is False:
            return ANONYMOUS
        if valid is True:
            return Identity(user) if await self.user_record(user) is not None else ANONYMOUS
        if await self.check_password(user, secret):
            return Identity(user)
        return ANONYMOUS
