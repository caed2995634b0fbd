"""Typed client of Fusion's query API (docs/API.md) over one httpx.AsyncClient.

The one place where httpx errors and HTTP statuses become fustor errors: transport errors,
timeouts and 5xx → UnavailableError; 503 → NotReadyError; 4xx → the error of that status.
Every request carries a timeout. View requests always pass `allow_partial=true`: a view that
is not ready is served anyway and the response meta says so.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from fustor.errors import (
    ERRORS_BY_STATUS,
    AuthError,
    FustorError,
    NotFoundError,
    NotReadyError,
    ProtocolError,
    ScopeError,
    UnavailableError,
)

API = "/api/v1"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Page:
    """One page of a directory listing."""

    entry: dict[str, Any]
    children: list[dict[str, Any]]
    next_cursor: str | None
    meta: dict[str, Any]


@dataclass(frozen=True)
class Walk:
    """Whole directory listings in walk order, and the directory the walk goes on at."""

    listings: list[tuple[dict[str, Any], list[dict[str, Any]]]]
    next: str | None
    meta: dict[str, Any]


def qpath(path: str) -> str:
    """Percent-encode a view path's bytes: names that are not UTF-8 (lone surrogates after
    os.fsdecode) travel as their original bytes."""
    return quote(os.fsencode(path), safe="/")


class ViewAPI(Protocol):
    """What the operations need from Fusion (FusionClient; tests pass a fake)."""

    view: str

    async def metadata(self, path: str) -> tuple[dict[str, Any], dict[str, Any]]: ...

    async def list_page(self, path: str, limit: int, cursor: str | None = None) -> Page: ...

    async def walk(self, start: str, max_entries: int) -> Walk: ...

    async def start_find(self, path: str) -> str | None: ...

    async def job(self, job_id: str) -> dict[str, Any]: ...

    async def stats(self) -> dict[str, Any]: ...


class FusionClient:
    def __init__(
        self, url: str, view: str, api_key: str | None, *, timeout: float = 10.0,
        connect_timeout: float = 3.0, transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.view = view
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=16),
            transport=transport,
        )
        self._vbase = ""
        self.use_view(view)
        self._down = False  # log reachability once per change, not once per request
        self.mounted = False  # before mounting, the CLI reports errors itself

    def use_view(self, view: str) -> None:
        self.view = view
        self._vbase = f"{API}/views/{quote(view, safe='')}"

    async def can_read(self, view: str) -> bool:
        """True if our key may read `view` (False on 401/403/404)."""
        try:
            await self._get(f"{API}/views/{quote(view, safe='')}/stats")
        except (AuthError, ScopeError, NotFoundError):
            return False
        return True

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> FusionClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ requests
    async def _get(self, url: str, *, anonymous: bool = False) -> dict[str, Any]:
        try:
            req = self._http.build_request("GET", url)
            if anonymous:
                req.headers.pop("X-API-Key", None)
            r = await self._http.send(req)
        except httpx.TimeoutException as exc:
            raise self._unavailable(
                f"Fusion at {self.url} did not answer in time ({type(exc).__name__})"
            ) from exc
        except httpx.HTTPError as exc:
            raise self._unavailable(f"cannot reach Fusion at {self.url}: {exc!r}") from exc
        if r.status_code >= 500:
            err = _error(r)
            self._unavailable(err.message)
            raise err
        if self._down:
            self._down = False
            log.info("Fusion at %s answers again", self.url)
        if r.status_code >= 400:
            raise _error(r)
        try:
            body = r.json()
        except ValueError as exc:
            raise ProtocolError(f"Fusion sent a body that is not JSON for {url}") from exc
        if not isinstance(body, dict):
            raise ProtocolError(f"Fusion sent {type(body).__name__} instead of an object for {url}")
        return body

    def _unavailable(self, message: str) -> UnavailableError:
        if not self._down and self.mounted:
            self._down = True
            log.warning("%s; filesystem calls that need Fusion fail with EIO until it is back", message)
        return UnavailableError(message)

    async def metadata(self, path: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(entry, meta) of `path`; NotFoundError if the view does not know it."""
        body = await self._get(f"{self._vbase}/metadata?path={qpath(path)}&allow_partial=true")
        entry = body.get("entry")
        if not isinstance(entry, dict):
            raise NotFoundError(f"{path} is not in view {self.view}")
        return entry, body.get("meta") or {}

    async def list_page(self, path: str, limit: int, cursor: str | None = None) -> Page:
        """The entry `path` and at most `limit` of its children, after `cursor`."""
        url = f"{self._vbase}/tree?path={qpath(path)}&recursive=false&limit={limit}&allow_partial=true"
        if cursor is not None:
            url += f"&cursor={quote(cursor, safe='')}"
        body = await self._get(url)
        entry = body.get("entry")
        if not isinstance(entry, dict):
            raise NotFoundError(f"{path} is not in view {self.view}")
        children = entry.get("children") or []
        if not isinstance(children, list):
            raise ProtocolError(f"Fusion sent children of {path} that are not a list")
        nxt = body.get("next_cursor")
        return Page(entry, children, nxt if isinstance(nxt, str) and nxt else None, body.get("meta") or {})

    async def walk(self, start: str, max_entries: int) -> Walk:
        """Whole listings of the directory `start` and of those after it in find's order,
        about `max_entries` children in all (docs/API.md `walk`)."""
        body = await self._get(f"{self._vbase}/walk?from={qpath(start)}"
                               f"&max_entries={max_entries}&allow_partial=true")
        listings = body.get("listings")
        if not isinstance(listings, list) or not all(
                isinstance(ls, dict) and isinstance(ls.get("entry"), dict)
                and isinstance(ls.get("children"), list) for ls in listings):
            raise ProtocolError(f"Fusion sent a walk from {start} without proper listings")
        nxt = body.get("next")
        return Walk([(ls["entry"], ls["children"]) for ls in listings],
                    nxt if isinstance(nxt, str) else None, body.get("meta") or {})

    async def start_find(self, path: str) -> str | None:
        """Start (or join) a realtime find of the directory `path`; returns the job id.
        limit=1 keeps the answer small: only the job matters here, not the listing."""
        body = await self._get(
            f"{self._vbase}/tree?path={qpath(path)}&recursive=false&limit=1"
            "&force_real_time=true&allow_partial=true"
        )
        job = body.get("job_id")
        return job if isinstance(job, str) else None

    async def job(self, job_id: str) -> dict[str, Any]:
        """A realtime-find job of this view (`GET .../views/{view}/jobs/{id}`, view key)."""
        return await self._get(f"{self._vbase}/jobs/{quote(job_id, safe='')}")

    async def stats(self) -> dict[str, Any]:
        return await self._get(f"{self._vbase}/stats?allow_partial=true")

    async def management_views(self) -> list[str]:
        """Ids of the views Fusion serves. The management API refuses view keys; without a
        key it answers loopback clients (when Fusion has no management key)."""
        body = await self._get(f"{API}/management/views", anonymous=True)
        views = body.get("views")
        if isinstance(views, Mapping):
            return [str(v) for v in views]
        if isinstance(views, list):
            out = []
            for v in views:
                if isinstance(v, str):
                    out.append(v)
                elif isinstance(v, Mapping) and isinstance(v.get("id") or v.get("view"), str):
                    out.append(str(v.get("id") or v.get("view")))
            return out
        raise ProtocolError("Fusion's management/views answer has no 'views'")


def _error(r: httpx.Response) -> FustorError:
    """The fustor error for an HTTP error response, with Fusion's own message if any."""
    try:
        body = r.json()
    except (ValueError, json.JSONDecodeError):
        body = None
    message = body.get("message") if isinstance(body, dict) else None
    text = str(message or r.reason_phrase or f"HTTP {r.status_code}")
    if r.status_code == 503:
        try:
            retry = int(r.headers.get("Retry-After", "5"))
        except ValueError:
            retry = 5
        if isinstance(body, dict) and body.get("error") == "NotReadyError":
            return NotReadyError(text, retry_after=retry)
        return UnavailableError(f"Fusion is unavailable (503): {text}")
    if r.status_code >= 500:
        return UnavailableError(f"Fusion failed ({r.status_code}): {text}")
    cls = ERRORS_BY_STATUS.get(r.status_code, ProtocolError)
    return cls(text)
