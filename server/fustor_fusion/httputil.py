"""HTTP helpers shared by the query app and the receiver apps: JSON responses, query-parameter
parsing (400 with a clear message), and the one error handler that maps FustorError → status.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import unquote_to_bytes

import trio
from quart import Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from fustor import paths
from fustor.errors import FustorError, NotReadyError, ProtocolError

log = logging.getLogger(__name__)

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def encode_json(body: Any) -> str:
    # stdlib json with ensure_ascii: non-UTF-8 names (lone surrogates) travel as \udcXX escapes.
    # check_circular off: answers are fresh trees of dicts and lists (-6% encode time)
    return json.dumps(body, separators=(",", ":"), check_circular=False)


def json_response(body: Any, status: int = 200) -> Response:
    return Response(encode_json(body), status=status, content_type="application/json")


def json_text_response(text: str) -> Response:
    """200 with a body already encoded as JSON text (by `encode_json` or the same format)."""
    return Response(text, status=200, content_type="application/json")


async def big_json_response(body: Any) -> Response:
    """For answers that may be large (a recursive tree: ~3 µs per entry to encode): encode in
    a worker thread so other requests go on meanwhile. `body` must not be shared state."""
    text = await trio.to_thread.run_sync(encode_json, body)
    return Response(text, status=200, content_type="application/json")


def _unquote(b: bytes) -> str:
    return unquote_to_bytes(b.replace(b"+", b" ")).decode("utf-8", "surrogateescape")


def _arg(name: str) -> str | None:
    """A query parameter, its percent-encoded bytes decoded as UTF-8 with surrogateescape:
    a name that is not UTF-8 (sent as its raw bytes, like os.fsencode gives them) arrives as
    the same lone-surrogate string the tree holds (werkzeug's args would replace them)."""
    args: dict[str, str] | None = g.get("fustor_args")
    if args is None:
        args = {}
        for part in request.query_string.split(b"&"):
            if not part:
                continue
            k, _, v = part.partition(b"=")
            args.setdefault(_unquote(k), _unquote(v))
        g.fustor_args = args
    return args.get(name)


def arg_bool(name: str, default: bool) -> bool:
    v = _arg(name)
    if v is None or v == "":
        return default
    low = v.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ProtocolError(f"{name}: expected true or false, got {v!r}", param=name)


def arg_int(name: str, default: int | None, *, lo: int = 0, hi: int | None = None) -> int | None:
    v = _arg(name)
    if v is None or v == "":
        return default
    try:
        n = int(v)
    except ValueError:
        raise ProtocolError(f"{name}: expected an integer, got {v!r}", param=name) from None
    if n < lo or (hi is not None and n > hi):
        bounds = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        raise ProtocolError(f"{name}: must be {bounds}, got {n}", param=name)
    return n


def arg_float(name: str, default: float, *, lo: float = 0.0, hi: float | None = None) -> float:
    v = _arg(name)
    if v is None or v == "":
        return default
    try:
        f = float(v)
    except ValueError:
        raise ProtocolError(f"{name}: expected a number, got {v!r}", param=name) from None
    if not (f >= lo) or (hi is not None and f > hi):
        bounds = f">= {lo:g}" if hi is None else f"between {lo:g} and {hi:g}"
        raise ProtocolError(f"{name}: must be {bounds}, got {v}", param=name)
    return f


def arg_str(name: str, default: str | None = None) -> str | None:
    v = _arg(name)
    if v is None:
        return default
    if "\x00" in v:
        raise ProtocolError(f"{name}: must not contain NUL", param=name)
    return v


def arg_path(name: str = "path", default: str = "/") -> str:
    """A view path from user input: lenient about '//' and a trailing '/', refuses '..' and NUL."""
    v = _arg(name)
    if v is None or v == "":
        return default
    try:
        return paths.normalise(v)
    except FustorError as exc:
        raise ProtocolError(f"{name}: {exc.message}", param=name) from None


DRAIN_SEC = 10.0


async def _drained(resp: Response) -> Response:
    """Read what is left of the request body before an error answer goes out. quart-trio
    stops receiving once the response is sent, and a body arriving after that was never
    read: the kept-alive connection of an agent retrying after a 401 hung. A body that cannot
    be read (too large, too slow) closes the connection instead."""
    if request.method in ("GET", "HEAD") and "Content-Length" not in request.headers:
        return resp
    try:
        with trio.move_on_after(DRAIN_SEC) as scope:
            await request.get_data(cache=False)
        ok = not scope.cancelled_caught
    except Exception:          # RequestEntityTooLarge, a timeout, a client gone
        ok = False
    if not ok:
        resp.headers["Connection"] = "close"
    return resp


def install_error_handlers(app: QuartTrio) -> None:
    """FustorError → its status and to_json(); HTTP errors → JSON; anything else → 500 + log.
    Each drains the request body first (see `_drained`)."""

    @app.errorhandler(FustorError)
    async def _fustor(err: FustorError) -> Response:
        resp = json_response(err.to_json(), err.status)
        if isinstance(err, NotReadyError):
            resp.headers["Retry-After"] = str(err.retry_after)
        return await _drained(resp)

    @app.errorhandler(HTTPException)
    async def _http(err: HTTPException) -> Response:
        code = err.code or 500
        kind = {404: "NotFoundError", 405: "MethodNotAllowed",
                413: "TooLargeError"}.get(code, type(err).__name__)
        message = err.description or err.name
        if code == 404:
            message = f"no such endpoint: {request.method} {request.path}"
        elif code == 413:
            message = "request body too large: split the batch (see max_batch_bytes)"
        return await _drained(json_response({"error": kind, "message": message}, code))

    @app.errorhandler(Exception)
    async def _unexpected(err: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return await _drained(json_response(
            {"error": "InternalError",
             "message": f"internal error ({type(err).__name__}); see the Fusion log"}, 500))
