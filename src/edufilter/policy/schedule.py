"""When a schedule is active: weekly slots in the school's local time, dated exceptions.

Daylight saving time follows the school's wall clock: an instant is active when the local
date and time it shows fall in one of that date's slots. On the spring-forward day the
skipped hour never shows, so the part of a slot inside it never happens (02:30-03:30 lasts
30 minutes); on the fall-back day the repeated hour shows twice, so a slot covering it is
active during both passes (02:30-03:30 lasts 90 minutes).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from edufilter.errors import PolicyError
from edufilter.policy.model import DatedException, Schedule, TimeSlot, check_id

MIDNIGHT = time(0, 0)
MINUTES_PER_DAY = 24 * 60


def check_schedule(schedule: Schedule) -> Schedule:
    """The schedule with its slots as tuples; PolicyError names the slot or date that is wrong."""
    check_id("schedule", schedule.name)
    where = f"schedule {schedule.name!r}"
    slots = []
    for slot in schedule.slots:
        if not isinstance(slot, TimeSlot):
            raise PolicyError(f"{where}: {slot!r} is not a time slot")
        if type(slot.weekday) is not int or not 0 <= slot.weekday <= 6:
            raise PolicyError(f"{where}: weekday {slot.weekday!r} is not 0 (Monday) to 6 (Sunday)")
        _check_slot(where, slot.start, slot.end)
        slots.append(slot)
    exceptions = []
    days: set[date] = set()
    for exception in schedule.exceptions:
        day = exception.day
        if not isinstance(day, date) or isinstance(day, datetime):
            raise PolicyError(f"{where}: exception day {day!r} is not a date")
        if day in days:
            raise PolicyError(f"{where}: exception {day} is given twice")
        days.add(day)
        for start, end in exception.slots:
            _check_slot(f"{where}, exception {day}", start, end)
        exceptions.append(DatedException(day, tuple(exception.slots)))
    return Schedule(schedule.name, tuple(slots), tuple(exceptions))


def _check_slot(where: str, start: time, end: time) -> None:
    for moment in (start, end):
        # The compiled image keeps one bit per minute, so slots start and end on whole minutes.
        if not isinstance(moment, time) or moment.tzinfo is not None or moment.second or moment.microsecond:
            raise PolicyError(f"{where}: slot bound {moment!r} is not a local time in whole minutes")
    if end != MIDNIGHT and end <= start:
        raise PolicyError(f"{where}: slot {start:%H:%M}-{end:%H:%M} ends before it starts")


def slots_on(schedule: Schedule, day: date) -> tuple[tuple[time, time], ...]:
    """The (start, end) slots of one local date: its exception's if it has one, else the weekday's."""
    for exception in schedule.exceptions:
        if exception.day == day:
            return exception.slots
    return tuple((slot.start, slot.end) for slot in schedule.slots if slot.weekday == day.weekday())


def is_active(schedule: Schedule, zone: ZoneInfo, when: datetime) -> bool:
    """Whether the schedule is on at the timezone-aware instant `when`, read on the school's clock."""
    if when.utcoffset() is None:
        raise ValueError("is_active needs a timezone-aware datetime")
    local = when.astimezone(zone)
    moment = local.time()
    return any(
        start <= moment and (end == MIDNIGHT or moment < end)
        for start, end in slots_on(schedule, local.date())
    )


def active_minutes(schedule: Schedule, zone: ZoneInfo, start_utc: datetime, minutes: int) -> bytes:
    """Bit i (byte i // 8, bit i % 8) is set when the schedule is active at start_utc + i minutes."""
    if start_utc.utcoffset() is None:
        raise ValueError("active_minutes needs a timezone-aware start")
    bitmap = bytearray((minutes + 7) // 8)
    day_masks: dict[date, bytes] = {}
    for index in range(minutes):
        local = (start_utc + timedelta(minutes=index)).astimezone(zone)
        mask = day_masks.get(local.date())
        if mask is None:
            mask = day_masks[local.date()] = _day_mask(slots_on(schedule, local.date()))
        if mask[local.hour * 60 + local.minute]:
            bitmap[index >> 3] |= 1 << (index & 7)
    return bytes(bitmap)


def _day_mask(slots: tuple[tuple[time, time], ...]) -> bytes:
    """One byte per minute of a local day, 1 inside a slot (slot bounds are whole minutes)."""
    mask = bytearray(MINUTES_PER_DAY)
    for start, end in slots:
        first = start.hour * 60 + start.minute
        last = MINUTES_PER_DAY if end == MIDNIGHT else end.hour * 60 + end.minute
        mask[first:last] = b"\x01" * (last - first)
    return bytes(mask)
