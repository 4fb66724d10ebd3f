"""Errors: every failure is an AegisError carrying the REST error body {"error": {code, message, details}}."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

RETRYABLE_CODES = frozenset({"RATE_LIMITED", "QUEUE_FULL", "UNAVAILABLE"})


class AegisError(Exception):
    """An error from an AEGIS server, or from the client before any answer came (then ``status`` is 0).

    Attributes:
        code: stable error code (``NOT_FOUND``, ``MANIFEST_INVALID``, ``QUEUE_FULL``, ...).
        message: what went wrong.
        status: the HTTP status; 0 when no answer came back (unreachable server, a bad directory to pack).
        details: the error body's ``details``, as sent (``hint``, ``problems``, ``retryAfterMs``, ...).
        hint: what to do about it, when the server said.
        problems: located problems (``{"path", "message", "file"?, "line"?, "column"?}``).
        retry_after_ms: how long to wait before retrying, when the server said.
    """

    def __init__(
        self,
        code: str,
        message: str,
        status: int = 0,
        details: Optional[Mapping[str, Any]] = None,
        retry_after_ms: Optional[int] = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.details: Dict[str, Any] = dict(details or {})
        hint = self.details.get("hint")
        self.hint: Optional[str] = hint if isinstance(hint, str) else None
        problems = self.details.get("problems")
        self.problems: List[Dict[str, Any]] = [
            p for p in problems if isinstance(p, dict) and isinstance(p.get("message"), str)
        ] if isinstance(problems, list) else []
        ms = self.details.get("retryAfterMs")
        self.retry_after_ms: Optional[int] = ms if isinstance(ms, (int, float)) and ms >= 0 else retry_after_ms

    @property
    def retryable(self) -> bool:
        """True when the same request may succeed later (rate limited, queue full, server unavailable)."""
        return self.code in RETRYABLE_CODES

    def __str__(self) -> str:
        text = f"{self.code}: {self.message}"
        return f"{text} (hint: {self.hint})" if self.hint else text

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status}, message={self.message!r})"


class InvalidRequestError(AegisError):
    """USAGE, MANIFEST_INVALID, PAYLOAD_TOO_LARGE, UNSUPPORTED_MEDIA_TYPE: fix the request (see ``problems`` and ``hint``)."""


class NotFoundError(AegisError):
    """NOT_FOUND: no such agent, revision, execution or key."""


class ConflictError(AegisError):
    """CONFLICT: the request clashes with the current state."""


class AuthError(AegisError):
    """UNAUTHENTICATED (no or a bad key) or PERMISSION_DENIED (the key lacks the scope)."""


class PolicyDeniedError(AegisError):
    """POLICY_DENIED: the manifest asks for something this server's policy refuses."""


class RuntimeUnavailableError(AegisError):
    """RUNTIME_UNAVAILABLE, LIMIT_UNENFORCEABLE: the server's host cannot run the agent as asked."""


class RetryableError(AegisError):
    """RATE_LIMITED, QUEUE_FULL, UNAVAILABLE: try again later (after ``retry_after_ms`` when set)."""


class WaitTimeoutError(AegisError):
    """``wait()`` ran out with the execution still going; ``execution`` is its last known state."""

    def __init__(self, message: str, execution: Dict[str, Any]) -> None:
        super().__init__("WAIT_TIMEOUT", message, 0, {"hint": "wait again, or cancel it"})
        self.execution = execution


_CLASSES = {
    "USAGE": InvalidRequestError,
    "MANIFEST_INVALID": InvalidRequestError,
    "PAYLOAD_TOO_LARGE": InvalidRequestError,
    "UNSUPPORTED_MEDIA_TYPE": InvalidRequestError,
    "NOT_FOUND": NotFoundError,
    "CONFLICT": ConflictError,
    "UNAUTHENTICATED": AuthError,
    "PERMISSION_DENIED": AuthError,
    "POLICY_DENIED": PolicyDeniedError,
    "RUNTIME_UNAVAILABLE": RuntimeUnavailableError,
    "LIMIT_UNENFORCEABLE": RuntimeUnavailableError,
    "RATE_LIMITED": RetryableError,
    "QUEUE_FULL": RetryableError,
    "UNAVAILABLE": RetryableError,
}


def make_error(
    code: str,
    message: str,
    status: int = 0,
    details: Optional[Mapping[str, Any]] = None,
    retry_after_ms: Optional[int] = None,
) -> AegisError:
    """The AegisError subclass for ``code`` (AegisError itself for codes without one)."""
    return _CLASSES.get(code, AegisError)(code, message, status, details, retry_after_ms)


def error_from_body(body: Any, status: int, retry_after_ms: Optional[int] = None) -> Optional[AegisError]:
    """An AegisError from a ``{"error": {code, message, details}}`` body, or None when it is not one."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    code, message = error.get("code"), error.get("message")
    if not isinstance(code, str) or not isinstance(message, str):
        return None
    details = error.get("details")
    return make_error(code, message, status, details if isinstance(details, dict) else {}, retry_after_ms)


def code_for_status(status: int) -> str:
    """The code an error answer without an AEGIS error body stands for (e.g. a proxy's 502 page)."""
    return {
        400: "USAGE",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        409: "CONFLICT",
        413: "PAYLOAD_TOO_LARGE",
        415: "UNSUPPORTED_MEDIA_TYPE",
        429: "RATE_LIMITED",
        502: "UNAVAILABLE",
        503: "UNAVAILABLE",
        504: "UNAVAILABLE",
    }.get(status, "INTERNAL")
