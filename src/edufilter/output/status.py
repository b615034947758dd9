"""The daemon's status file (`<state>/run/status.json`), read by `edufilter status` and the API.

The supervisor rewrites it about once a second, atomically: a reader sees the old or the new
document, never a mix. It holds no client identity, so it is world-readable (0644).
Schema 1 (times ISO 8601 with offset, counts since the daemon started; write_status adds
"schema"):

    {"schema": 1,
     "updated_at": time,                       # a stale file means a daemon that died
     "daemon": {"pid": int, "started_at": time, "edufilter": "0.1.0"},
     "policy": {"version": int,                # policy_version compiled into the image
                "images": {"policy": int, "categories": int},
                "problem": str | null},       # why the live images lag the store (a full disk)
     "rules": {"backend": "nft" | "xt", "table": "inet edufilter",
               "queued_packets": int,         # the to_queue rule's counter, read each second
               "reinstalled": int,            # times the rules were gone or changed (another tool) and put back
               "last_reinstall": str | null} | null,
     "storage": {"full": bool,                 # the state disk refused a write in the last minute
                 "lost_events": int},          # block events that could not be stored
     "queues": [{"worker": int, "queue": int, "pid": int | null,
                 "state": "starting" | "running" | "hung" | "restarting" | "stopped",
                 "restarts": int, "hangs": int,          # hangs: stopped answering, killed and restarted
                 "packets": int,
                 "verdicts": {"<mark code>": packets},   # "1" allow, "2" reject, "3" drop, ...
                 "queue_total": int,                     # waiting in the kernel queue now
                 "queue_dropped": int, "user_dropped": int,
                 "name_cache_hits": int, "name_cache_misses": int,   # names answered without a lookup, and not
                 "connections_reused": int,   # SYNs on a 5-tuple whose earlier connection was decided
                 "evasion": int,              # flows blocked as a circumvention attempt
                 "decisions": {group: {category or "": {verdict: {"flows": int}}}}}],
     "totals": {"packets": int, "flows": int, "queue_dropped": int, "user_dropped": int, "evasion": int,
                "connections_reused": int,
                "fail_open" | "fail_closed_dropped": int},   # packets that met no worker
     "last_reload": {"at": time, "duration_ms": float, "result": "ok" | "failed: <reason>"} | null,
     "hub": {"site": str, "connected": bool, "revisions": {bucket: int}, "applied": int, "rejected": int,
             "events_published": int, "events_waiting": int, "events_dropped": int,
             "events_lost": int} | null}  # multi-site mode
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from edufilter.errors import EdufilterError

STATUS_SCHEMA = 1
_MAX_STATUS_BYTES = 16 * 1024 * 1024  # far above any real document; guards a runaway file


def write_status(path: Path | str, status: Mapping[str, object]) -> None:
    """Replace the status file with `status` as JSON (datetimes as ISO 8601), atomically."""
    path = Path(path)
    try:
        text = json.dumps({"schema": STATUS_SCHEMA, **status}, default=_iso_time, indent=1, allow_nan=False) + "\n"
    except (TypeError, ValueError) as error:
        raise EdufilterError(f"status document cannot be written as JSON: {error}") from error
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with open(descriptor, "w", encoding="utf-8") as file:
                os.fchmod(file.fileno(), 0o644)
                file.write(text)
            # No fsync: it is rewritten every second, and a reader copes with a torn file.
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError as error:
        if error.errno == errno.ENOSPC and _rewrite_in_place(path, text):
            return
        raise EdufilterError(f"{path}: cannot write the status file: {error}") from error


def _rewrite_in_place(path: Path, text: str) -> bool:
    """On a full disk: the new document over the old file's blocks, which needs no new ones
    while it fits in them (a reader may then see a torn file, which it copes with)."""
    data = text.encode()
    try:
        with open(path, "r+b") as file:
            stat = os.fstat(file.fileno())
            if len(data) > max(stat.st_size, stat.st_blocks * 512):
                return False
            file.write(data)
            file.truncate()
    except OSError:
        return False
    return True


def read_status(path: Path | str) -> dict[str, object] | None:
    """The status document, or None when the file is missing, unreadable or not a JSON object."""
    try:
        with open(path, "rb") as file:
            data = file.read(_MAX_STATUS_BYTES + 1)
        if len(data) > _MAX_STATUS_BYTES:
            return None
        status = json.loads(data)
    except (OSError, ValueError, RecursionError):  # ValueError: also bad UTF-8; RecursionError: [[[[...
        return None
    return status if isinstance(status, dict) else None


def _iso_time(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON")
