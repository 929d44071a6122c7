"""Who is calling: Bearer API keys mapped to user ids, or one local user on loopback.

With ``settings.api_keys`` set, every API route needs ``Authorization: Bearer <key>`` and the key
names the user. Without keys tether runs in local mode: every caller is the user ``local``, so
it must only be reachable from this machine — ``check_bind`` refuses a non-loopback bind
address, and the app itself refuses requests from non-loopback peers unless remote access was
explicitly allowed.
"""

import hmac
import ipaddress
from typing import Final

from fastapi import Request
from starlette.exceptions import HTTPException

from tether.errors import UsageError
from tether.ids import UserId
from tether.settings import Settings

LOCAL_USER: Final = UserId("local")
_CHALLENGE: Final = {"WWW-Authenticate": "Bearer"}


def parse_api_keys(spec: str) -> dict[str, UserId]:
    """``"key:user,key2:user2"`` -> ``{key: user}``; empty -> ``{}`` (local mode).

    Raises:
        UsageError: an entry is not ``key:user``, or a key appears twice.
    """
    keys: dict[str, UserId] = {}
    for entry in spec.split(","):
        if not entry.strip():
            continue
        key, sep, user = (part.strip() for part in entry.partition(":"))
        if not sep or not key or not user:
            raise UsageError("api_keys entries must look like key:user")
        if key in keys:
            raise UsageError("an API key is listed twice in api_keys")
        keys[key] = UserId(user)
    return keys


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an IP address) is this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, settings: Settings, *, allow_remote: bool) -> None:
    """Refuse to serve local mode (no API keys) on a non-loopback address.

    Raises:
        UsageError: ``host`` is not loopback, no API keys are configured, and remote access was
            not explicitly allowed.
    """
    if allow_remote or parse_api_keys(settings.api_keys) or is_loopback(host):
        return
    raise UsageError(
        f"refusing to listen on {host} without API keys: anyone who can reach it would act as "
        "the local user; set TETHER_API_KEYS, bind 127.0.0.1, or allow remote access explicitly",
        host=host,
    )


class Authenticator:
    """The FastAPI dependency that names the caller (401 problem+json if it can't)."""

    def __init__(self, keys: dict[str, UserId], *, allow_remote: bool) -> None:
        self._keys = [(key.encode(), user) for key, user in keys.items()]
        self._allow_remote = allow_remote

    @property
    def is_required(self) -> bool:
        return bool(self._keys)

    async def __call__(self, request: Request) -> UserId:
        if not self._keys:
            client = request.client
            if not self._allow_remote and client is not None and not is_loopback(client.host):
                raise HTTPException(403, "local mode serves this machine only")
            return LOCAL_USER
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(401, "an API key is required (Authorization: Bearer)", _CHALLENGE)
        return self._user_for(token.strip().encode())

    def _user_for(self, token: bytes) -> UserId:
        # Deliberate: every key is compared, in constant time, so timing says nothing about keys.
        found: UserId | None = None
        for key, user in self._keys:
            if hmac.compare_digest(key, token):
                found = user
        if found is None:
            raise HTTPException(401, "invalid API key", _CHALLENGE)
        return found
