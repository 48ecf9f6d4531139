"""workflow-server: the public API for plugin and component authors."""

from .chat import (
    Refused,
    body_digest,
    chat_endpoint,
    chat_post,
    fresh_timestamp,
    hmac_hex,
    json_body,
    same_signature,
)
from .engine.chat import Accepted, ChatMessage, ChatService, Replier
from .engine.context import Response, Services, StepContext, StepResult
from .errors import RegistrationError, StepError, ValidationError, WorkflowError
from .hooks.hookspecs import Register, hookimpl

__all__ = [
    "Accepted",
    "ChatMessage",
    "ChatService",
    "Refused",
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
    "body_digest",
    "chat_endpoint",
    "chat_post",
    "fresh_timestamp",
    "hmac_hex",
    "hookimpl",
    "json_body",
    "same_signature",
]
