"""Every exception the server raises on purpose; `http/middleware.py` alone turns a WorkflowError into JSON."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

ECHO_LIMIT = 128  # characters of a client's value (an id, a path) an error message repeats


def clip(value: str, limit: int = ECHO_LIMIT) -> str:
    """`value` cut to `limit` characters for an error message, with an ellipsis when it was longer."""
    return value if len(value) <= limit else value[: limit - 1] + "…"


class WorkflowError(Exception):
    """Base of every error the server answers with a JSON body and an HTTP status."""

    status: int = 500
    headers: Mapping[str, str] = MappingProxyType({})  # extra response headers (Allow, WWW-Authenticate, ...)

    def __init__(self, message: str, *, status: int | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.details = details

    def to_json(self) -> dict[str, Any]:
        """The response body: the message under `error`, plus any details."""
        return {"error": self.message, **{k: v for k, v in self.details.items() if v is not None}}


class ConfigError(WorkflowError):
    """A configuration that cannot be loaded; `problems` holds every `file:line: message`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems) if problems else "invalid configuration")
        self.problems = problems


class RegistrationError(WorkflowError):
    """A plugin or component registered something invalid or already owned by another provider."""


class BadRequest(WorkflowError):
    """The request itself is malformed (bad JSON, bad form, bad parameter)."""

    status = 400


class NotFound(WorkflowError):
    """No route, pipeline or execution by that name."""

    status = 404


class MethodNotAllowed(WorkflowError):
    """The path exists but not for this method."""

    status = 405

    def __init__(self, message: str, allowed: list[str], *, route: str = "") -> None:
        super().__init__(message, allowed=allowed)
        self.allowed = allowed
        self.headers = {"Allow": ", ".join(allowed)}
        self.route = route  # the matched path's template, for the metrics label


class UnsupportedMediaType(WorkflowError):
    """A request body of a type the endpoint does not read."""

    status = 415


class PayloadTooLarge(WorkflowError):
    """The request body is over the configured limit."""

    status = 413


class StepError(WorkflowError):
    """Raised by a step to fail the pipeline; `status` picks the HTTP answer (500 by default)."""


class ValidationError(StepError):
    """Raised by a step when its input is invalid: the pipeline answers 400."""

    status = 400


class StepTypeUnavailable(WorkflowError):
    """A pipeline uses a step type that no plugin or component provides right now."""

    status = 503


class PipelineTimeout(WorkflowError):
    """The pipeline, or one of its steps, ran past its timeout."""

    status = 504


class ServiceUnavailable(WorkflowError):
    """The server is not ready, is draining, or its queue is full."""

    status = 503


class QueueUnavailable(ServiceUnavailable):
    """The durable queue cannot store a job now: the caller answers 503 so its client retries."""


class Unauthorized(WorkflowError):
    """No token, or one that does not verify: 401 with a Bearer challenge."""

    status = 401

    def __init__(self, message: str, *, error: str = "invalid_token") -> None:
        super().__init__(message)
        self.headers = {
            "WWW-Authenticate": f'Bearer realm="workflow-admin", error="{error}", '
            f'error_description="{message.replace(chr(34), chr(39))}"'
        }


class Forbidden(WorkflowError):
    """A valid token without the admin role."""

    status = 403


class AuthUnavailable(WorkflowError):
    """The admin API has no way to verify tokens; every call is refused."""

    status = 503


class Conflict(WorkflowError):
    """The component already exists (POST) and must be replaced with PUT."""

    status = 409


class PreconditionFailed(WorkflowError):
    """An `If-Match` that no longer holds: someone else changed the resource first."""

    status = 412


class StoreUnavailable(WorkflowError):
    """The store did not answer, so the change was not made anywhere."""

    status = 503


class ComponentError(WorkflowError):
    """A component version that cannot go into service; names the file and, where known, the line."""

    status = 422

    def __init__(self, message: str, *, file: str, line: int | None = None, status: int | None = None) -> None:
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {message}", status=status, file=file, line=line)
        self.reason = message


class ListenError(Exception):
    """A listener's address cannot be bound (in use, not permitted, unknown host): a one-line start-up error."""
