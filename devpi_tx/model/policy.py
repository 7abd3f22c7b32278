# -*- test-case-name: tests.model.test_model -*-
"""
Who may do what (spec 2.4), the inheritance order of indexes and the mirror whitelist (spec 3.5, 3.6).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# -- permissions ------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """Who a request speaks for; C{user is None} for anonymous requests."""

    user: str | None
    groups: tuple[str, ...] = ()

    def principals(self) -> set[str]:
        result = {":ANONYMOUS:"}
        if self.user is not None:
            result |= {":AUTHENTICATED:", self.user}
            result |= {f":{g}" for g in self.groups}
        return result


ANONYMOUS = Identity(None)


def acl_allows(acl: Iterable[str], identity: Identity) -> bool:
    return bool(identity.principals() & set(acl))


@dataclass(frozen=True)
class Policy:
    """
    Global permissions; C{restrict_modify} is the C{--restrict-modify} set
    of principals or C{None}.
    """

    restrict_modify: frozenset[str] | None = None

    def _admin(self, identity: Identity) -> bool:
        if self.restrict_modify is None:
            return identity.user == "root"
        return bool(identity.principals() & self.restrict_modify)

    def may_create_user(self, identity: Identity) -> bool:
        return self.restrict_modify is None or self._admin(identity)

    def may_modify_user(self, identity: Identity, user: str, password_only: bool) -> bool:
        if self.restrict_modify is None:
            return identity.user in ("root", user)
        return self._admin(identity) or (password_only and identity.user == user)

    def may_delete_user(self, identity: Identity, user: str) -> bool:
        if user == "root":
            return False
        if self.restrict_modify is None:
            return identity.user in ("root", user)
        return self._admin(identity) and identity.user != user

    def may_manage_index(self, identity: Identity, owner: str) -> bool:
        if self.restrict_modify is None:
            return identity.user in ("root", owner)
        return self._admin(identity)

    def may_upload(self, identity: Identity, ixconfig: Mapping[str, Any]) -> bool:
        if ixconfig.get("type") != "stage":
            return False
        return acl_allows(ixconfig.get("acl_upload", []), identity)

    def may_delete_entry(self, identity: Identity, owner: str, ixconfig: Mapping[str, Any]) -> bool:
        return self.may_upload(identity, ixconfig) or self.may_manage_index(identity, owner)

    def may_upload_toxresult(self, identity: Identity, ixconfig: Mapping[str, Any]) -> bool:
        return acl_allows(ixconfig.get("acl_toxresult_upload", [":ANONYMOUS:"]), identity)


def parse_restrict_modify(spec: str | None) -> frozenset[str] | None:
    if not spec:
        return None
    return frozenset(p.strip() for p in spec.split(",") if p.strip())


# -- inheritance ------------------------------------------------------------


def stage_resolution_order(start: str, get_config: Callable[[str], Mapping[str, Any] | None]) -> list[str]:
    """
    The stage resolution order of spec 3.5: private stages breadth first,
    then every mirror once; cycles and missing bases are skipped.
    """
    queue = [start]
    seen = {start}
    order: list[str] = []
    mirrors: list[str] = []
    while queue:
        name = queue.pop(0)
        config = get_config(name)
        if config is None:
            continue
        order.append(name)
        for base in config.get("bases", []):
            if base in seen:
                continue
            base_config = get_config(base)
            if base_config is None:
                continue
            seen.add(base)
            if base_config.get("type") == "mirror":
                mirrors.append(base)
            else:
                queue.append(base)
    return order + mirrors


def mirrors_allowed(
    project: str,
    sro: Sequence[tuple[str, Mapping[str, Any]]],
    has_project: Callable[[str], bool],
) -> set[str]:
    """
    Which mirrors in C{sro} may be consulted for C{project} (spec 3.6): a
    private hit blocks every later mirror unless the project is whitelisted.

    @param sro: C{(stage, config)} pairs in resolution order.
    @param has_project: tells whether a private stage has C{project}.
    """
    if not sro:
        return set()
    inheritance = sro[0][1].get("mirror_whitelist_inheritance", "union")
    whitelist: set[str] | None = None
    whitelisted = False
    private_hit = False
    allowed: set[str] = set()
    for stage, config in sro:
        if config.get("type") == "mirror":
            if whitelisted or not private_hit:
                allowed.add(stage)
            continue
        own = set(config.get("mirror_whitelist", []))
        if whitelist is None:
            whitelist = own
        elif inheritance == "intersection":
            whitelist &= own
        else:
            whitelist |= own
        if "*" in whitelist or project in whitelist:
            whitelisted = True
        elif has_project(stage):
            private_hit = True
    return allowed
