"""The daemon's status file (`<state>/run/status.json`), read by `edufilter status` and the API.

The supervisor rewrites it about once a second, atomically: a reader sees the old or the new
document, never a mix. It holds no client identity, so it is world-readable (0644).
Schema 1 (times ISO 8601 with offset, counts since the daemon started; write_status adds
"schema"):

    {"schema": 1,
     "updated_at": time,                       # a stale file means a daemon that died
     "daemon": {"pid": int, "started_at": time, "edufilter": "0.1.0"},
     "policy": {"version": int,                # policy_version compiled into the image
                "images": {"policy": int, "categories": int}},
     "rules": {"backend": "nft" | "xt", "table": "inet edufilter",
               "queued_packets": int,         # the to_queue rule's counter, read each second
               "reinstalled": int} | null,    # times the rules were gone (another tool) and put back
     "queues": [{"worker": int, "queue": int, "pid": int | null,
                 "state": "starting" | "running" | "restarting" | "stopped",
                 "restarts": int, "packets": int,
                 "verdicts": {"<mark code>": packets},   # "1" allow, "2" reject, "3" drop, ...
                 "queue_total": int,                     # waiting in the kernel queue now
                 "queue_dropped": int, "user_dropped": int,
                 "name_cache_hits": int, "name_cache_misses": int,   # names answered without a lookup, and not
                 "evasion": int,                         # flows reset as circumvention attempts
                 "decisions": {group: {category or "": {verdict: {"flows": int}}}}}],
     "totals": {"packets": int, "flows": int, "queue_dropped": int, "user_dropped": int, "evasion": int,
                "fail_open" | "fail_closed_dropped": int},   # packets that met no worker
     "last_reload": {"at": time, "duration_ms": float, "result": "ok" | "failed: <reason>"} | null}
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from edufilter.errors import EdufilterError

STATUS_SCHEMA = 1
_MAX_STATUS_BYTES = 16 * 1024 * 1024  # far above any real document; guards a runaway file


def status_path(state_dir: Path | str) -> Path:
    """Where the daemon of a state directory keeps its status file."""
    return Path(state_dir) / "run" / "status.json"


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
        raise EdufilterError(f"{path}: cannot write the status file: {error}") from error


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
