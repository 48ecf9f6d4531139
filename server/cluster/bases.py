"""What a replica's components folder last agreed with the store: kept in the folder, read and written whole.

The record lives in the folder it describes (a hidden file the watcher ignores). A file missing from the
folder is never read as a deletion, so a record left behind by `rm components/*.py` is harmless: the
missing files are written back from the store. Blocking: run in a thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..reload.files import write_atomically

log = logging.getLogger("workflow.replication")

SYNC_FILE = ".workflow-sync.json"


@dataclass(frozen=True, slots=True)
class Synced:
    """The store version this replica's folder last agreed with; `sha256` None when it was deleted."""

    version: int
    sha256: str | None


# The key of the deletions seen here that the store has not heard of yet; no component id starts with `_`.
PENDING_DELETIONS = "_deleted_here"


def load_bases(folder: Path) -> tuple[dict[str, Synced], set[str]]:
    """The bases and pending deletions recorded in `folder` (none when it is new, emptied, or unreadable)."""
    path = folder / SYNC_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        pending = {str(cid) for cid in data.pop(PENDING_DELETIONS, [])}
        return {cid: Synced(int(v["version"]), v.get("sha256")) for cid, v in data.items()}, pending
    except FileNotFoundError:
        return {}, set()
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("replication: ignoring %s (%s): every component is compared with the store afresh", path, exc)
        return {}, set()


def save_bases(folder: Path, bases: dict[str, Synced], pending: set[str]) -> None:
    """Replace the record in `folder` atomically."""
    record: dict[str, object] = {cid: asdict(s) for cid, s in sorted(bases.items())}
    if pending:
        record[PENDING_DELETIONS] = sorted(pending)
    write_atomically(folder / SYNC_FILE, json.dumps(record, indent=1))


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


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """What `restore_folder` needs of one store row."""

    id: str
    version: int
    sha256: str
    source: str
    deleted: bool


def restore_folder(
    folder: Path, rows: list[StoredVersion], bases: dict[str, Synced], conflicts: Path, pending: set[str]
) -> dict[str, str]:
    """Start-up, before the folder loads: bring its files in line with the store; return what was done per id.

    A file missing from the folder is written back (never taken for a deletion). A file the store has moved
    past is replaced (kept in `conflicts` first when it was edited here too). A file edited here while the
    store stood still is left alone: once it loads, the first reconcile uploads it. A file deleted while the
    server ran, whose deletion the store has not heard of yet (`pending`), stays deleted. `bases` is updated
    for every file that now agrees with the store.
    """
    done: dict[str, str] = {}
    for row in rows:
        if row.id in pending:
            continue
        path = folder / f"{row.id}.py"
        local = _sha_of(path)
        store_sha = None if row.deleted else row.sha256
        base = bases.get(row.id)
        if local != store_sha:
            store_moved = base is None or base.version != row.version
            if local is not None and not store_moved:
                continue  # edited here while the store stood still: uploaded after it loads
            if local is not None and (base is None or base.sha256 != local):
                keep_conflict(conflicts, row.id, path)
                done[row.id] = "conflict"
            if row.deleted:
                path.unlink(missing_ok=True)
                done.setdefault(row.id, "deleted")
            else:
                write_atomically(path, row.source)
                done.setdefault(row.id, "restored" if local is None else "updated")
        bases[row.id] = Synced(row.version, store_sha)
    return done


def _sha_of(path: Path) -> str | None:
    """The content hash of a component file as the loader computes it, or None when there is none."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    try:  # read_text's newline translation is part of what the loader hashes
        return hashlib.sha256(path.read_text(encoding="utf-8").encode()).hexdigest()
    except (OSError, UnicodeDecodeError):  # not a loadable file, but someone's edit all the same
        return hashlib.sha256(raw).hexdigest()
