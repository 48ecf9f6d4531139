"""The compiled, immutable shape of a pipeline: trigger, steps and the flow between them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .chat import ChatFilter
from .templates import Renderable

END = -1


@dataclass(frozen=True, slots=True)
class Trigger:
    """What starts a pipeline; type-specific fields are filled for the types that use them."""

    type: str
    config: Mapping[str, Any]
    line: int = 0
    path: str = ""
    method: str = ""
    is_async: bool = False
    topic: str = ""
    interval: float = 0.0
    chat: ChatFilter | None = None

    @property
    def workflow_type(self) -> str:
        """The `workflow_type` metric label: chat triggers count as messaging."""
        return "messaging" if self.type == "chat" else self.type


@dataclass(frozen=True, slots=True)
class Step:
    """One configured step; `config` is raw, `renderer` its compiled templates."""

    name: str
    type: str
    config: Mapping[str, Any]
    renderer: Renderable
    next: str | None = None
    timeout: float | None = None
    line: int = 0
    prepared: Any = None
    targets: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Pipeline:
    """A compiled pipeline; `flow[i]` is the index that runs after step i when it does not jump."""

    name: str
    trigger: Trigger
    steps: tuple[Step, ...]
    flow: tuple[int, ...]
    on_error: str = "stop"
    timeout: float = 30.0
    compensation: tuple[Step, ...] = ()
    line: int = 0
    index: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.index:
            object.__setattr__(self, "index", {s.name: i for i, s in enumerate(self.steps)})


def plan_flow(steps: tuple[Step, ...]) -> tuple[int, ...]:
    """The fall-through successor of each step.

    A step that a routing step (such as `step.conditional`) can jump to never falls through
    to a sibling target: when it ends, execution goes to its `next:` step if set, otherwise
    to the first step after all of that router's targets (the join).
    """
    index = {s.name: i for i, s in enumerate(steps)}
    join_of_target: dict[int, int] = {}
    for router in steps:
        if not router.targets:
            continue
        positions = [index[t] for t in router.targets if t in index]
        if not positions:
            continue
        join = max(positions) + 1
        for pos in positions:
            join_of_target.setdefault(pos, join)
    flow = []
    for i, step in enumerate(steps):
        if step.next is not None:
            if step.next not in index:
                raise ValueError(f"step {step.name!r}: next step {step.next!r} does not exist")
            flow.append(index[step.next])
            continue
        successor = join_of_target.get(i, i + 1)
        # A join that lands on another router's target (nested conditionals) would fall into a
        # sibling branch: climb to that router's join instead.
        seen = set()
        while successor in join_of_target and successor not in seen:
            seen.add(successor)
            successor = join_of_target[successor]
        flow.append(successor if successor < len(steps) else END)
    return tuple(flow)
