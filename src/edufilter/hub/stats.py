"""Per-minute block counts for the hub: how many blocks each minute per group, category and
reason (the event's kind and action), with no pupil identity, so the group sees its sites'
trends without their events' names or pseudonyms."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone

from edufilter.hub.model import check_site_name

STATS_STREAM = "EDUFILTER_STATS"
STATS_SUBJECT_PREFIX = "edufilter.stats."
MINUTE = timedelta(minutes=1)
# Events reach the supervisor within a second or two of the block; a minute closes this long
# after it ended. A later event makes another record for its minute: readers add them up.
CLOSE_AFTER = timedelta(seconds=10)
ROWS_PER_RECORD = 500  # keeps one message far below the servers' 1 MB limit

CountKey = tuple[str, str | None, str, str]  # group, category, kind, action


def stats_subject(site: str) -> str:
    return STATS_SUBJECT_PREFIX + check_site_name(site)


def minute_of(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(second=0, microsecond=0)


class MinuteCounts:
    """Block counts of the minutes not yet closed, from the events' own times."""

    def __init__(self) -> None:
        self.minutes: dict[datetime, Counter[CountKey]] = {}
        self.unreadable = 0  # records without a time or a group: not counted

    def add(self, records: Iterable[Mapping[str, object]]) -> None:
        for record in records:
            try:
                minute = minute_of(datetime.fromisoformat(str(record["time"])))
                key = (str(record["group"]), _optional(record.get("category")), str(record.get("kind", "")),
                       str(record.get("action", "")))
            except (KeyError, ValueError, TypeError):
                self.unreadable += 1
                continue
            self.minutes.setdefault(minute, Counter())[key] += 1

    def close(self, now: datetime | None = None) -> list[dict]:
        """The records of the minutes that ended CLOSE_AFTER before now (all, without now),
        oldest first; those minutes are forgotten."""
        closed = sorted(minute for minute in self.minutes if now is None or minute + MINUTE + CLOSE_AFTER <= now)
        records = []
        for minute in closed:
            rows = [{"group": group, "category": category, "kind": kind, "action": action, "blocks": count}
                    for (group, category, kind, action), count in sorted(self.minutes.pop(minute).items(),
                                                                          key=_row_order)]
            for start in range(0, len(rows), ROWS_PER_RECORD):
                records.append({"minute": minute.isoformat(), "counts": rows[start:start + ROWS_PER_RECORD]})
        return records


def _optional(value: object) -> str | None:
    return None if value is None else str(value)


def _row_order(item: tuple[CountKey, int]) -> tuple[str, str, str, str]:
    (group, category, kind, action), _ = item
    return group, category or "", kind, action
