"""State shared by a test and the component files it writes (`from tests.hub import HUB`); each module resets it.

A module of its own, importing nothing, so the component's candidate process imports it in microseconds.
"""

from typing import Any

HUB: dict[str, Any] = {}
