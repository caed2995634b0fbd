"""API keys and their scopes (DESIGN §9): push keys open one pipe on one receiver, view keys
read one view, management keys the management API; without keys, loopback clients only.
401 for a missing or unknown key, 403 for a key used outside its scope.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Container
from dataclasses import dataclass

from fustor.config import FusionConfig
from fustor.errors import AuthError, ScopeError
from fustor_fusion.view import View


@dataclass(frozen=True)
class KeyInfo:
    kind: str                 # "receiver" | "view" | "management"
    owner: str = ""           # receiver id or view id
    pipe_id: str = ""         # receiver keys only


def is_loopback(addr: str | None) -> bool:
    if not addr:
        return False
    try:
        ip = ipaddress.ip_address(addr.split("%")[0])
    except ValueError:
        return addr == "localhost"
    mapped = getattr(ip, "ipv4_mapped", None)      # ::ffff:127.0.0.1 on a dual-stack socket
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


class KeyRing:
    """Every key of a FusionConfig, by value."""

    def __init__(self, config: FusionConfig) -> None:
        keys: dict[str, KeyInfo] = {}
        for rid, rc in config.receivers.items():
            for k in rc.api_keys:
                keys[k.key] = KeyInfo("receiver", rid, k.pipe_id)
        for vid, vc in config.views.items():
            for key in vc.api_keys:
                keys[key] = KeyInfo("view", vid)
        for key in config.management_api_keys:
            keys[key] = KeyInfo("management")
        self.keys = keys
        self.management_keys = bool(config.management_api_keys)

    def receiver_pipe(self, receiver_id: str, key: str | None, pipes: Container[str]) -> str:
        """The pipe a push key opens on receiver `receiver_id` (401 unknown, 403 wrong scope)."""
        if not key:
            raise AuthError("missing X-API-Key header: send the pipe's push key")
        info = self._known(key, ": check the receiver's api_keys in the Fusion config")
        if info.kind != "receiver":
            raise ScopeError(f"a {info.kind} key cannot push events; use a receiver (push) key")
        if info.owner != receiver_id:
            raise ScopeError(f"this key belongs to receiver {info.owner!r}, not {receiver_id!r}")
        if info.pipe_id not in pipes:
            raise ScopeError(f"pipe {info.pipe_id!r} of this key is not configured")
        return info.pipe_id

    def view_access(self, view_id: str, key: str | None, remote: str | None,
                    lookup: Callable[[str], View]) -> View:
        """The view `view_id` if `key` may read it (401/403), else 404 for an unknown view."""
        if key:
            info = self._known(key, ": use a key from views.<view>.api_keys")
            view = lookup(view_id)
            if info.kind != "view":
                raise ScopeError(f"a {info.kind} key cannot read views; use a view key")
            if info.owner != view_id:
                raise ScopeError(f"this key reads view {info.owner!r}, not {view_id!r}")
            return view
        view = lookup(view_id)
        if view.config.api_keys:
            raise AuthError(f"missing X-API-Key header: view {view_id!r} needs a view key")
        # A view without keys is open to loopback clients only (like management).
        if not is_loopback(remote):
            raise ScopeError(f"view {view_id!r} has no api_keys: only loopback clients may read it")
        return view

    def management(self, key: str | None, remote: str | None) -> None:
        if self.management_keys and not key:
            raise AuthError("missing X-API-Key header: use a management key")
        if key:
            info = self._known(key, ": use a key from management.api_keys" if self.management_keys
                               else " (management.api_keys is not configured: "
                                    "loopback clients need no key)")
            if info.kind != "management":
                raise ScopeError(f"a {info.kind} key cannot use the management API")
            return  # only configured management keys are known with that kind
        if not is_loopback(remote):
            raise ScopeError("management.api_keys is not configured: "
                             "only loopback clients may use the management API")

    def _known(self, key: str, hint: str) -> KeyInfo:
        """The key's scope, or 401 with `hint` saying where keys come from."""
        info = self.keys.get(key)
        if info is None:
            raise AuthError(f"unknown API key{hint}")
        return info
