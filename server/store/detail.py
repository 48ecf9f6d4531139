"""An execution's detail for the admin UI: trigger payload, step outputs and component versions, as one JSON value.

It is written in the execution's own row (the `detail` column), in the recorder's batches: no extra write per
step. Secrets are redacted by key (any key containing one of the configured words, case-insensitive), and a
detail over the size cap keeps a folded preview of each part that is too large. Redaction walks the values
only when their JSON text mentions one of the words, so the common case costs one encode and six substring
searches (tests/bench/bench_details.py measures it against recording without details).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .codec import dump_json

if TYPE_CHECKING:
    from ..engine.executor import Outcome

REDACTED = "[redacted]"
PREVIEW_CHARS = 512
# The step types of an execution -> {component id: version} of those provided by components.
VersionsOf = Callable[[Iterable[str]], dict[str, int]]


class DetailPolicy:
    """How details are kept: the redacted key words, the size cap, and where component versions come from."""

    def __init__(self, redact: Iterable[str], max_bytes: int, versions: VersionsOf | None = None) -> None:
        self.words = tuple(sorted({w.strip().lower() for w in redact if w.strip()}))
        self.max_bytes = max_bytes
        self.versions = versions

    def encode(self, outcome: Outcome) -> str | None:
        """The detail of a finished execution as compact JSON text (None when it has nothing to keep)."""
        if self.max_bytes <= 0:
            return None
        parts: dict[str, Any] = {"payload": outcome.trigger, "outputs": outcome.outputs or {}}
        if outcome.rerun_of is not None:
            parts["rerun_of"] = outcome.rerun_of
        if self.versions is not None:
            parts["components"] = self.versions(s.type for s in outcome.steps)
        text = dump_json(parts) or "{}"
        if self._mentions(text):
            parts = self.redact(parts)
            parts["redacted"] = True
            text = dump_json(parts) or "{}"
        if len(text) > self.max_bytes:
            text = dump_json(self._fold(parts)) or "{}"
        return text

    def _mentions(self, text: str) -> bool:
        """Whether the JSON text holds a redacted word anywhere (substring tests: a tenth of a regex's cost here)."""
        return any(map(text.lower().__contains__, self.words))

    def redact(self, value: Any) -> Any:
        """`value` with the value of every key that contains a redacted word replaced."""
        if isinstance(value, Mapping):
            return {k: REDACTED if isinstance(k, str) and self._secret(k) else self.redact(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.redact(v) for v in value]
        return value

    def _secret(self, key: str) -> bool:
        lowered = key.lower()
        return any(word in lowered for word in self.words)

    def _fold(self, parts: dict[str, Any]) -> dict[str, Any]:
        """Replace each value too large for its share of the cap by a preview of its JSON text."""
        outputs = parts.get("outputs") or {}
        share = max(self.max_bytes // (2 + len(outputs)), PREVIEW_CHARS)
        folded = dict(parts, truncated=True)
        folded["payload"] = _folded(parts.get("payload"), share)
        folded["outputs"] = {name: _folded(value, share) for name, value in outputs.items()}
        return folded


def _folded(value: Any, share: int) -> Any:
    text = dump_json(value) or "null"
    if len(text) <= share:
        return value
    return {"truncated": True, "bytes": len(text.encode()), "preview": text[:PREVIEW_CHARS]}
