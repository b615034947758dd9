"""Schedules: validation, slots of a date, activity at an instant and per-minute bitmaps (DST too)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from edufilter.errors import PolicyError
from edufilter.policy.model import DatedException, Schedule, TimeSlot
from edufilter.policy.schedule import active_minutes, check_schedule, is_active, slots_on

UTC = timezone.utc
BRUSSELS = ZoneInfo("Europe/Brussels")
MIDNIGHT = time(0, 0)
SPRING_FORWARD = date(2026, 3, 29)  # Sunday: 02:00 CET becomes 03:00 CEST at 01:00 UTC
FALL_BACK = date(2026, 10, 25)  # Sunday: 03:00 CEST becomes 02:00 CET at 01:00 UTC

LESSONS = Schedule(
    "lessons",
    (
        TimeSlot(0, time(8, 25), time(12, 5)),
        TimeSlot(0, time(13, 0), time(15, 50)),
        TimeSlot(2, time(8, 25), time(12, 5)),
        TimeSlot(4, time(22, 0), MIDNIGHT),
    ),
    (
        DatedException(date(2026, 11, 30)),  # a Monday off
        DatedException(date(2026, 12, 2), ((time(8, 30), time(12, 30)),)),  # a Wednesday exam
    ),
)


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=BRUSSELS)


def bit(bitmap: bytes, index: int) -> bool:
    return bool(bitmap[index >> 3] >> (index & 7) & 1)


def set_bits(bitmap: bytes, minutes: int) -> list[int]:
    return [index for index in range(minutes) if bit(bitmap, index)]


def local_midnight_utc(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=BRUSSELS).astimezone(UTC)


# check_schedule


def test_check_schedule_keeps_a_good_schedule():
    assert check_schedule(LESSONS) == LESSONS
    listed = Schedule("exams", [TimeSlot(0, time(8), time(9))], [DatedException(date(2027, 6, 14), [(time(8), time(9))])])
    assert check_schedule(listed) == Schedule(
        "exams", (TimeSlot(0, time(8), time(9)),), (DatedException(date(2027, 6, 14), ((time(8), time(9)),)),)
    )


@pytest.mark.parametrize(
    "schedule, problem",
    [
        (Schedule("Lessons", ()), "schedule 'Lessons': use 1-64 lowercase"),
        (Schedule("s", ((0, time(8), time(9)),)), "is not a time slot"),  # type: ignore[arg-type]
        (Schedule("s", (TimeSlot(7, time(8), time(9)),)), "weekday 7 is not 0 \\(Monday\\) to 6 \\(Sunday\\)"),
        (Schedule("s", (TimeSlot(True, time(8), time(9)),)), "weekday True"),
        (Schedule("s", (TimeSlot(0, time(8, 0, 30), time(9)),)), "not a local time in whole minutes"),
        (Schedule("s", (TimeSlot(0, time(8, tzinfo=UTC), time(9)),)), "not a local time in whole minutes"),
        (Schedule("s", (TimeSlot(0, "08:00", time(9)),)), "not a local time"),  # type: ignore[arg-type]
        (Schedule("s", (TimeSlot(0, time(9), time(9)),)), "slot 09:00-09:00 ends before it starts"),
        (Schedule("s", (TimeSlot(0, time(9), time(8)),)), "slot 09:00-08:00 ends before it starts"),
        (Schedule("s", (), (DatedException(datetime(2026, 12, 1)),)), "exception day .* is not a date"),
        (Schedule("s", (), (DatedException("2026-12-01"),)), "exception day '2026-12-01' is not a date"),  # type: ignore[arg-type]
        (
            Schedule("s", (), (DatedException(date(2026, 12, 1)), DatedException(date(2026, 12, 1)))),
            "exception 2026-12-01 is given twice",
        ),
        (
            Schedule("s", (), (DatedException(date(2026, 12, 1), ((time(12), time(8)),)),)),
            "schedule 's', exception 2026-12-01: slot 12:00-08:00 ends before it starts",
        ),
    ],
)
def test_check_schedule_names_what_is_wrong(schedule: Schedule, problem: str):
    with pytest.raises(PolicyError, match=problem):
        check_schedule(schedule)


def test_a_slot_may_run_to_midnight_but_not_start_there_and_end_earlier():
    check_schedule(Schedule("s", (TimeSlot(0, MIDNIGHT, MIDNIGHT),)))  # the whole day
    check_schedule(Schedule("s", (TimeSlot(0, time(23, 59), MIDNIGHT),)))


# slots_on and is_active


def test_slots_on_a_date_come_from_its_exception_or_its_weekday():
    assert slots_on(LESSONS, date(2026, 11, 23)) == ((time(8, 25), time(12, 5)), (time(13, 0), time(15, 50)))
    assert slots_on(LESSONS, date(2026, 11, 30)) == ()
    assert slots_on(LESSONS, date(2026, 12, 2)) == ((time(8, 30), time(12, 30)),)
    assert slots_on(LESSONS, date(2026, 11, 24)) == ()  # Tuesday: no slots


def test_is_active_at_slot_edges():
    monday = date(2026, 11, 23)
    tick = timedelta(microseconds=1)
    assert not is_active(LESSONS, BRUSSELS, local(monday, 8, 25) - tick)
    assert is_active(LESSONS, BRUSSELS, local(monday, 8, 25))
    assert is_active(LESSONS, BRUSSELS, local(monday, 12, 5) - tick)
    assert not is_active(LESSONS, BRUSSELS, local(monday, 12, 5))
    assert is_active(LESSONS, BRUSSELS, local(monday, 15, 49))
    assert not is_active(LESSONS, BRUSSELS, local(monday, 15, 50))


def test_is_active_until_midnight():
    friday = date(2026, 11, 27)
    assert not is_active(LESSONS, BRUSSELS, local(friday, 21, 59))
    assert is_active(LESSONS, BRUSSELS, local(friday, 22))
    assert is_active(LESSONS, BRUSSELS, local(friday, 23, 59) + timedelta(seconds=59.999))
    assert not is_active(LESSONS, BRUSSELS, local(friday, 23, 59) + timedelta(minutes=1))


def test_is_active_with_dated_exceptions():
    assert not is_active(LESSONS, BRUSSELS, local(date(2026, 11, 30), 10))  # the Monday off
    assert is_active(LESSONS, BRUSSELS, local(date(2026, 12, 7), 10))  # the Monday after
    exam = date(2026, 12, 2)
    assert not is_active(LESSONS, BRUSSELS, local(exam, 8, 25))
    assert is_active(LESSONS, BRUSSELS, local(exam, 12, 29))
    assert not is_active(LESSONS, BRUSSELS, local(exam, 12, 30))


def test_is_active_reads_the_schools_clock():
    assert is_active(LESSONS, BRUSSELS, datetime(2026, 11, 23, 7, 25, tzinfo=UTC))  # CET: UTC+1
    assert not is_active(LESSONS, BRUSSELS, datetime(2026, 11, 23, 11, 5, tzinfo=UTC))  # 12:05 CET
    assert is_active(LESSONS, BRUSSELS, datetime(2026, 6, 22, 6, 25, tzinfo=UTC))  # CEST: UTC+2
    assert not is_active(LESSONS, BRUSSELS, datetime(2026, 6, 22, 6, 24, tzinfo=UTC))
    # Late on Sunday in New York is Monday morning in Brussels.
    assert is_active(LESSONS, BRUSSELS, datetime(2026, 11, 23, 3, 0, tzinfo=ZoneInfo("America/New_York")))
    assert not is_active(LESSONS, ZoneInfo("America/New_York"), datetime(2026, 11, 23, 9, 0, tzinfo=BRUSSELS))


def test_is_active_needs_an_aware_instant():
    with pytest.raises(ValueError):
        is_active(LESSONS, BRUSSELS, datetime(2026, 11, 23, 10))


def test_is_active_across_the_skipped_hour():
    night = Schedule("night", (TimeSlot(6, time(2, 30), time(3, 30)),))
    start = local_midnight_utc(SPRING_FORWARD)
    active = [minute for minute in range(24 * 60) if is_active(night, BRUSSELS, start + timedelta(minutes=minute))]
    # 01:00 UTC shows 03:00 CEST: only 03:00-03:30 of the slot ever shows.
    assert active == list(range(120, 150))


def test_is_active_across_the_repeated_hour():
    night = Schedule("night", (TimeSlot(6, time(2, 30), time(3, 30)),))
    start = local_midnight_utc(FALL_BACK)
    active = [minute for minute in range(25 * 60) if is_active(night, BRUSSELS, start + timedelta(minutes=minute))]
    # 02:30-03:00 CEST, then 02:00-02:30 CET is before the slot, then 02:30-03:30 CET.
    assert active == list(range(150, 180)) + list(range(210, 270))


# active_minutes


def test_active_minutes_bit_order_and_length():
    schedule = Schedule("s", (TimeSlot(0, time(8, 3), time(8, 4)), TimeSlot(0, time(8, 10), time(8, 11))))
    start = local(date(2026, 11, 23), 8).astimezone(UTC)
    bitmap = active_minutes(schedule, BRUSSELS, start, 12)
    assert len(bitmap) == 2
    assert bitmap == bytes([0b0000_1000, 0b0000_0100])


def test_active_minutes_agrees_with_is_active_over_a_week():
    start = local(date(2026, 11, 23), 0).astimezone(UTC)
    minutes = 14 * 24 * 60
    bitmap = active_minutes(LESSONS, BRUSSELS, start, minutes)
    assert len(bitmap) == minutes // 8
    expected = [m for m in range(minutes) if is_active(LESSONS, BRUSSELS, start + timedelta(minutes=m))]
    assert set_bits(bitmap, minutes) == expected


def test_active_minutes_on_the_spring_forward_day():
    whole_sunday = Schedule("sunday", (TimeSlot(6, MIDNIGHT, MIDNIGHT), TimeSlot(0, time(8, 25), time(9, 0))))
    start = local_midnight_utc(SPRING_FORWARD)
    minutes = 48 * 60
    bitmap = active_minutes(whole_sunday, BRUSSELS, start, minutes)
    # The local day has 23 hours; Monday 08:25 CEST is 06:25 UTC.
    monday = local_midnight_utc(SPRING_FORWARD + timedelta(days=1))
    first_lesson = int((local(SPRING_FORWARD + timedelta(days=1), 8, 25).astimezone(UTC) - start).total_seconds()) // 60
    assert (monday - start) == timedelta(hours=23)
    assert set_bits(bitmap, minutes) == list(range(23 * 60)) + list(range(first_lesson, first_lesson + 35))
    night = Schedule("night", (TimeSlot(6, time(2, 30), time(3, 30)),))
    assert set_bits(active_minutes(night, BRUSSELS, start, 24 * 60), 24 * 60) == list(range(120, 150))


def test_active_minutes_on_the_fall_back_day():
    whole_sunday = Schedule("sunday", (TimeSlot(6, MIDNIGHT, MIDNIGHT),))
    start = local_midnight_utc(FALL_BACK)
    bitmap = active_minutes(whole_sunday, BRUSSELS, start, 26 * 60)
    assert set_bits(bitmap, 26 * 60) == list(range(25 * 60))  # the local day has 25 hours
    night = Schedule("night", (TimeSlot(6, time(2, 30), time(3, 30)),))
    bits = set_bits(active_minutes(night, BRUSSELS, start, 25 * 60), 25 * 60)
    assert bits == list(range(150, 180)) + list(range(210, 270))  # 90 minutes: the hour shows twice


def test_active_minutes_needs_an_aware_start():
    with pytest.raises(ValueError):
        active_minutes(LESSONS, BRUSSELS, datetime(2026, 11, 23), 60)
