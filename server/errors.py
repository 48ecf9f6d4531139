"""The exception hierarchy; `server.http` turns every one of these into a JSON response."""

from __future__ import annotations

from typing import Any


class WorkflowError(Exception):
    """Base of every error the server answers with a JSON body and an HTTP status."""

    status: int = 500
    headers: dict[str, str] = {}  # extra response headers (Allow, WWW-Authenticate, ...)

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
