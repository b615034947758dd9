"""The events outbox: bounded, oldest dropped and counted, order and ids kept across reopen."""

from __future__ import annotations

from pathlib import Path

import pytest

from edufilter.errors import EdufilterError
from edufilter.hub.outbox import Outbox


def test_a_full_outbox_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", 1000)
    outbox.append([b"%d" % number for number in range(1500)])
    assert outbox.pending() == 1000
    assert outbox.dropped() == 500
    assert [payload for _, payload in outbox.oldest(2)] == [b"500", b"501"]


def test_ids_are_never_reused_and_name_their_outbox_so_a_resend_is_recognised(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", 1000)
    outbox.append([b"a", b"b"])
    last_id = outbox.oldest(10)[-1][0]
    outbox.remove_through(last_id)
    outbox.close()
    reopened = Outbox(tmp_path / "outbox.sqlite", 1000)
    reopened.append([b"c"])
    ((new_id, payload),) = reopened.oldest(10)
    assert payload == b"c" and new_id > last_id
    assert reopened.identity == outbox.identity  # the same outbox...
    assert Outbox(tmp_path / "other.sqlite", 1000).identity != outbox.identity  # ...and a new one, whose ids restart


def test_appending_to_a_closed_outbox_is_an_error_not_a_crash(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", 1000)
    outbox.close()
    with pytest.raises(EdufilterError, match="event outbox"):
        outbox.append([b"late"])
