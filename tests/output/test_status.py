"""The status file: atomic JSON writes, and reads that never fail on a missing or damaged file."""

from __future__ import annotations

import json
import stat
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from edufilter.errors import EdufilterError
from edufilter.output.status import read_status, write_status

STARTED = datetime(2024, 3, 14, 7, 30, tzinfo=timezone.utc)


def status(packets: int = 0) -> dict[str, object]:
    return {
        "updated_at": STARTED,
        "daemon": {"pid": 4242, "started_at": STARTED, "edufilter": "0.1.0"},
        "policy": {"version": 12, "images": {"policy": 12, "categories": 3}},
        "queues": [{
            "worker": 0, "queue": 0, "pid": 4243, "state": "running", "restarts": 0, "packets": packets,
            "verdicts": {"1": packets}, "queue_total": 0, "queue_dropped": 0, "user_dropped": 0, "fail_open": 0,
        }],
        "totals": {"packets": packets, "flows": 1, "queue_dropped": 0, "user_dropped": 0, "fail_open": 0},
        "last_reload": None,
    }


def test_written_status_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "run" / "status.json"
    write_status(path, status(5))
    read = read_status(path)
    assert read is not None
    assert read["schema"] == 1
    assert read["daemon"] == {"pid": 4242, "started_at": "2024-03-14T07:30:00+00:00", "edufilter": "0.1.0"}
    assert read["queues"][0]["packets"] == 5  # type: ignore[index]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["status.json"]


def test_readers_never_see_a_partial_document(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    write_status(path, status(0))
    seen: list[object] = []
    done = threading.Event()

    def read_until_done() -> None:
        while not done.is_set() and len(seen) < 20000:
            seen.append(read_status(path))

    reader = threading.Thread(target=read_until_done)
    reader.start()
    try:
        for packets in range(1, 300):
            write_status(path, status(packets * 1000))
    finally:
        done.set()
        reader.join(timeout=10)
    assert seen and all(isinstance(document, dict) and document["schema"] == 1 for document in seen)
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_missing_status_is_none(tmp_path: Path) -> None:
    assert read_status(tmp_path / "status.json") is None
    assert read_status(tmp_path / "no" / "such" / "dir" / "status.json") is None


@pytest.mark.parametrize(
    "content",
    [b"", b'{"schema": 1, "queues": [', b"\x00\xff\xfe garbage", b"[1, 2, 3]", b'"text"', b"null",
     b"[" * 200000, b'{"a": "\xff"}', b"NaN"],
)
def test_damaged_status_is_none(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "status.json"
    path.write_bytes(content)
    assert read_status(path) is None


def test_a_directory_or_unreadable_path_is_none(tmp_path: Path) -> None:
    (tmp_path / "status.json").mkdir()
    assert read_status(tmp_path / "status.json") is None


@pytest.mark.parametrize("bad", [{"pid": object()}, {"ratio": float("nan")}, {"set": {1, 2}}])
def test_unwritable_document_is_a_clear_error_and_keeps_the_old_file(tmp_path: Path, bad: dict[str, object]) -> None:
    path = tmp_path / "status.json"
    write_status(path, status(7))
    with pytest.raises(EdufilterError, match="JSON"):
        write_status(path, {**status(8), **bad})
    assert read_status(path)["totals"]["packets"] == 7  # type: ignore[index]
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_unwritable_place_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("a file where the directory should be")
    with pytest.raises(EdufilterError, match="cannot write the status file"):
        write_status(tmp_path / "run" / "status.json", status())


def test_on_a_full_disk_the_status_is_rewritten_over_its_own_blocks() -> None:
    """The daemon must still say in its status that the disk is full: the new document goes
    over the old file's blocks while it fits in them, and only fails when it does not."""
    from small_disk import run_on_small_disk

    done = run_on_small_disk('''
import json
from edufilter.errors import EdufilterError
from edufilter.output.status import read_status, write_status
path = Path(sys.argv[1]) / "run" / "status.json"
write_status(path, {"problem": None, "padding": "x" * 1000})
fill_disk(Path(sys.argv[1]))
write_status(path, {"problem": "the disk is full"})
fitted = read_status(path)
try:
    write_status(path, {"problem": "too long", "padding": "x" * 100000})
    too_long = "written"
except EdufilterError as error:
    too_long = str(error)
print(json.dumps({"fitted": fitted, "too_long": too_long, "after": read_status(path)}))
''')
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["fitted"] == {"schema": 1, "problem": "the disk is full"}
    assert "cannot write the status file" in outcome["too_long"]
    assert outcome["after"] == outcome["fitted"], "a document that does not fit leaves the last one whole"
