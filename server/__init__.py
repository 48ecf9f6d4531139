"""workflow-server: the public API for plugin and component authors."""

from .engine.chat import Accepted, ChatMessage, ChatService, Replier
from .engine.context import Response, Services, StepContext, StepResult
from .errors import RegistrationError, StepError, ValidationError, WorkflowError
from .hooks.hookspecs import Register, hookimpl

__all__ = [
    "Accepted",
    "ChatMessage",
    "ChatService",
    "Register",
    "RegistrationError",
    "Replier",
    "Response",
    "Services",
    "StepContext",
    "StepError",
    "StepResult",
    "ValidationError",
    "WorkflowError",
    "hookimpl",
]
