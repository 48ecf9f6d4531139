"""workflow-server: the public API for plugin and component authors."""

from .errors import RegistrationError, StepError, ValidationError, WorkflowError
from .hookspecs import hookimpl
from .steps import Response, Services, StepContext, StepResult

__all__ = [
    "hookimpl",
    "RegistrationError",
    "Response",
    "Services",
    "StepContext",
    "StepError",
    "StepResult",
    "ValidationError",
    "WorkflowError",
]
