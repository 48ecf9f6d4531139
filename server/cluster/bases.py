"""What a replica's components folder last agreed with the store: kept in the folder, read and written whole.

The record lives in the folder it describes (a hidden file the watcher ignores), so a folder that is emptied
or replaced forgets it too, and its replica then takes everything from the store. Blocking: run in a thread.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..reload.files import write_temp

log = logging.getLogger("workflow.replication")

SYNC_FILE = ".workflow-sync.json"


@dataclass(frozen=True, slots=True)
class Synced:
    """The store version this replica's folder last agreed with; `sha256` None when it was deleted."""

    version: int
    sha256: str | None


def load_bases(folder: Path) -> dict[str, Synced]:
    """The bases recorded in `folder` (none when it is new, was emptied, or the record is unreadable)."""
    path = folder / SYNC_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {cid: Synced(int(v["version"]), v.get("sha256")) for cid, v in data.items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("replication: ignoring %s (%s): every component is compared with the store afresh", path, exc)
        return {}


def save_bases(folder: Path, bases: dict[str, Synced]) -> None:
    """Replace the record in `folder` atomically."""
    data = json.dumps({cid: asdict(s) for cid, s in sorted(bases.items())}, indent=1)
    path = folder / SYNC_FILE
    os.replace(write_temp(path, data), path)


def keep_conflict(conflicts: Path, cid: str, path: Path) -> Path | None:
    """Copy a local file the store's version is about to replace into `conflicts`; None when there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    conflicts.mkdir(parents=True, exist_ok=True)
    kept = conflicts / f"{cid}.{time.strftime('%Y%m%dT%H%M%S')}.py"
    kept.write_text(text, encoding="utf-8")
    return kept
