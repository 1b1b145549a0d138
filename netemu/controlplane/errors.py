"""API errors raised by the store and by every `Client`, shaped like the
Kubernetes API server's status errors (reason + HTTP code), so that an HTTP
or etcd-backed client can raise the same types."""

from __future__ import annotations


class ApiError(Exception):
    """Base of every error the API returns; `code` is the HTTP status."""

    code = 500
    reason = "InternalError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ApiError):
    code = 404
    reason = "NotFound"


class AlreadyExists(ApiError):
    code = 409
    reason = "AlreadyExists"


class Conflict(ApiError):
    """Optimistic concurrency failure: the object changed since it was read."""

    code = 409
    reason = "Conflict"


class Invalid(ApiError):
    code = 422
    reason = "Invalid"


class Expired(ApiError):
    """A watch asked for a resourceVersion older than the retained history
    (HTTP 410 Gone); the caller must list again."""

    code = 410
    reason = "Expired"
