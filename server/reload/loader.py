"""Load one component file into a fresh module object and collect what it registers, off the live registry."""

from __future__ import annotations

import hashlib
import linecache
import re
import sys
import traceback
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pluggy

from ..config.loader import AppConfig, compile_config
from ..config.yamlload import LineDict
from ..errors import ComponentError, ConfigError, RegistrationError
from ..hooks import hookspecs
from ..hooks.registry import Endpoint, Registry, RegistryBuilder, StepType

# The one id rule, shared by the admin API and the watcher (CONTRACT §6): what the API accepts, the folder can
# hold and the watcher loads; a leading `_` is a private helper module the watcher skips, so no id has one.
COMPONENT_ID = re.compile(r"[a-z0-9][a-z0-9_]{0,63}")
ID_RULE = "component ids are 1-64 characters of a-z, 0-9 and _, starting with a letter or digit"
MODULE_PREFIX = "workflow_components."


@dataclass(frozen=True, slots=True)
class Source:
    """One version of a component file as read from disk (or received by the admin API)."""

    id: str
    path: str
    text: str
    sha256: str

    @classmethod
    def from_text(cls, component_id: str, path: str, text: str) -> Source:
        """A source with its content hash."""
        return cls(component_id, path, text, hashlib.sha256(text.encode()).hexdigest())


@dataclass(eq=False)
class Component:
    """One loaded, validated version of a component: its module and what it registered."""

    id: str
    path: str
    sha256: str
    module: types.ModuleType
    plugin_manager: pluggy.PluginManager
    steps: Mapping[str, StepType]
    endpoints: tuple[Endpoint, ...]
    text: str = ""  # the source, for the admin API and the store
    version: int = 1
    loaded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))


def component_id(raw: str) -> str | None:
    """`raw` (an API id or a file stem) lower-cased, if it is a valid component id; else None."""
    cid = raw.lower()
    # fullmatch: the pattern's `$` would let a trailing newline through.
    return cid if COMPONENT_ID.fullmatch(cid) else None


def component_id_for(path: str | Path) -> str:
    """The id of a component file: its lower-cased stem; ComponentError (400) when that is not a valid id."""
    stem = Path(path).stem
    cid = component_id(stem)
    if cid is None:
        raise ComponentError(f"{ID_RULE}, not {stem.lower()!r}", file=str(path), status=400)
    return cid


def is_component_file(name: str) -> bool:
    """`*.py`, but not hidden, `_private.py` or an editor's `#lock#` file.

    Other names that are no valid id (`my-step.py`) are component files too: they load as a refusal that
    says why, which is more use to their author than silence.
    """
    return name.endswith(".py") and not name.startswith((".", "_", "#"))


def component_files(directory: Path) -> list[Path]:
    """The component files directly in `directory`, in a stable order (none if it does not exist)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if is_component_file(p.name) and p.is_file())


def read_source(path: str | Path) -> Source:
    """Read a component file (blocking: run it in a thread)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ComponentError(f"not UTF-8 text: {exc.reason}", file=str(path)) from None
    return Source.from_text(component_id_for(path), str(path), text)


def build_module(source: Source) -> types.ModuleType:
    """Compile and execute `source` into a new module object that never enters `sys.modules`.

    Blocking: run it in a thread. Each version gets its own module, so nothing of an older
    version (or a stale .pyc) can leak into it.
    """
    try:
        code = compile(source.text, source.path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise ComponentError(f"syntax error: {exc.msg}", file=source.path, line=exc.lineno) from None
    module = types.ModuleType(MODULE_PREFIX + source.id)
    module.__file__ = source.path
    # Tracebacks from the component show its source even though no file is imported.
    linecache.cache[source.path] = (len(source.text), None, source.text.splitlines(True), source.path)
    # Visible in sys.modules only while its body runs: dataclasses (with string annotations) and
    # the like look the defining module up there; afterwards the module must be free to be collected.
    sys.modules[module.__name__] = module
    try:
        exec(code, module.__dict__)
    except BaseException as exc:  # exit(), KeyboardInterrupt, GeneratorExit...: none may stop the server
        raise ComponentError(
            f"failed to import: {describe(exc)}", file=source.path, line=line_in(exc, source.path)
        ) from None
    finally:
        if sys.modules.get(module.__name__) is module:
            del sys.modules[module.__name__]
    return module


def collect(module: types.ModuleType, source: Source, base: Registry) -> Component:
    """Register `module` with its own plugin manager and collect its step types and endpoints.

    `base` is the registry without this component; a name it already holds is refused.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    name = f"component:{source.id}"
    try:
        pm.register(module, name=name)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        message = " ".join(str(exc).split())
        raise ComponentError(message, file=source.path, line=_hook_line(module, message)) from None
    if not pm.get_hookcallers(module):
        raise ComponentError("defines no hook implementations (decorate them with @hookimpl)", file=source.path)
    builder = RegistryBuilder(base=base)
    try:
        builder.collect(pm)
    except RegistrationError as exc:  # the line is the component's `register(...)` call
        raise ComponentError(
            exc.message.removeprefix(f"{name}: "), file=source.path, line=line_in(exc, source.path)
        ) from None
    except BaseException as exc:  # register_steps may raise SystemExit or GeneratorExit too
        raise ComponentError(
            f"registration failed: {describe(exc)}", file=source.path, line=line_in(exc, source.path)
        ) from None
    steps = {k: v for k, v in builder.steps.items() if v.provider == name}
    endpoints = tuple(e for e in builder.endpoints if e.provider == name)
    return Component(source.id, source.path, source.sha256, module, pm, steps, endpoints, source.text)


def compile_with(document: LineDict, registry: Registry, *, config_source: str, source: Source) -> AppConfig:
    """Compile the config in service against `registry` (which holds `source`'s version), blaming that version."""
    try:
        return compile_config(document, registry, source=config_source, strict=False)
    except ConfigError as exc:
        raise ComponentError(
            "the config does not compile with this version: " + "; ".join(exc.problems), file=source.path
        ) from None
    except BaseException as exc:  # the component's `prepare` raised something the config loader does not expect
        raise ComponentError(
            f"the config does not compile with this version: {describe(exc)}",
            file=source.path,
            line=line_in(exc, source.path),
        ) from None


def describe(exc: BaseException) -> str:
    """`Type: message`, or just `Type` when the exception has no message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def line_in(exc: BaseException, path: str) -> int | None:
    """The deepest line of `path` in the traceback (or the SyntaxError's own line)."""
    if isinstance(exc, SyntaxError) and exc.filename == path:
        return exc.lineno
    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == path]
    return lines[-1] if lines else None


def _hook_line(module: types.ModuleType, message: str) -> int | None:
    """The line of the hook implementation pluggy complained about."""
    # Signature errors say "for hook 'x'"; a hook pluggy does not know is "unknown hook 'x'".
    named = re.search(r"(?:for|unknown) hook '(\w+)'", message)
    candidates = [vars(module).get(named.group(1))] if named else []
    candidates += [v for v in vars(module).values() if hasattr(v, f"{hookspecs.PROJECT}_impl")]
    for value in candidates:
        code = getattr(value, "__code__", None)
        if isinstance(code, types.CodeType):
            return code.co_firstlineno
    return None
