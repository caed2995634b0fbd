"""The exception tree shared by the agent, Fusion and the mount.

    FustorError
     ├── ConfigError            a config file is invalid (file, key path, reason)
     ├── ProtocolError          a wire message is malformed (what and where)
     │    └── PathError         a path is not normalised, has '..', NUL, ...
     ├── AuthError              401: unknown or missing API key
     ├── ScopeError             403: a key used outside its scope
     ├── NotFoundError          404: unknown view, path, job, session
     ├── SessionExpiredError    410: the session ended; create a new one
     ├── TooLargeError          413: a batch or a response over its limit
     ├── NotReadyError          503: a view that is not ready (carries retry_after)
     └── UnavailableError       the peer cannot be reached or answered 5xx
Each boundary translates to and from these in one place (HTTP in app.py and client.py,
errno in the mount's operations, exit codes in the CLI).
"""

from __future__ import annotations

from typing import Any


class FustorError(Exception):
    """Base of every error Fustor raises on purpose."""

    status = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": type(self).__name__, "message": self.message}
        body.update(self.details)
        return body


class ConfigError(FustorError):
    status = 400

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        where = ": ".join(p for p in (file, key) if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.file = file
        self.key = key
        self.reason = message


class ProtocolError(FustorError):
    status = 400


class PathError(ProtocolError):
    status = 400


class AuthError(FustorError):
    status = 401


class ScopeError(FustorError):
    status = 403


class NotFoundError(FustorError):
    status = 404


class SessionExpiredError(FustorError):
    status = 410


class TooLargeError(FustorError):
    status = 413


class NotReadyError(FustorError):
    status = 503

    def __init__(self, message: str, *, retry_after: int = 5, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after = retry_after


class UnavailableError(FustorError):
    status = 503


ERRORS_BY_STATUS: dict[int, type[FustorError]] = {
    400: ProtocolError,
    401: AuthError,
    403: ScopeError,
    404: NotFoundError,
    410: SessionExpiredError,
    413: TooLargeError,
    422: ProtocolError,
    503: NotReadyError,
}
