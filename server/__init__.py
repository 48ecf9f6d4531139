"""workflow-server: the public API for plugin and component authors."""

from .engine.context import Response, Services, StepContext, StepResult
from .errors import RegistrationError, StepError, ValidationError, WorkflowError
from .hooks.hookspecs import Register, hookimpl

__all__ = [
    "Register",
    "RegistrationError",
    "Response",
    "Services",
    "StepContext",
    "StepError",
    "StepResult",
    "ValidationError",
    "WorkflowError",
    "hookimpl",
]
