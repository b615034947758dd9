"""The console's pieces on their own: sessions and bar charts."""

from __future__ import annotations

from collections import Counter

from edufilter.console import sessions
from edufilter.console.charts import BAR_AREA_WIDTH, MAX_BARS, bar_chart, totals
from edufilter.console.sessions import SessionStore


def test_sessions_are_bounded_and_the_least_recently_used_goes_first(monkeypatch: object) -> None:
    monkeypatch.setattr(sessions, "MAX_SESSIONS", 3)  # type: ignore[attr-defined]
    store = SessionStore(clock=lambda: 0.0)
    ids = [store.start(f"token-{number}")[0] for number in range(3)]
    assert store.find(ids[0]) is not None  # used: now the most recent
    newest, _ = store.start("token-3")
    assert len(store) == 3 and store.find(ids[1]) is None
    assert all(store.find(session_id) is not None for session_id in (ids[0], ids[2], newest))


def test_ending_a_tokens_sessions_leaves_the_others() -> None:
    store = SessionStore()
    mine, theirs = store.start("teacher")[0], store.start("admin")[0]
    store.end_for_token("teacher")
    assert store.find(mine) is None and store.find(theirs) is not None


def test_each_session_gets_its_own_csrf_token() -> None:
    store = SessionStore()
    first, second = store.start("a")[1], store.start("a")[1]
    assert first.csrf != second.csrf and len(first.csrf) >= 40


def test_a_chart_sums_buckets_ranks_and_folds_the_tail_into_other() -> None:
    rows = [{"start": "t0", "key": f"category-{number}", "flows": number, "packets": 0} for number in range(1, 15)]
    rows += [{"start": "t1", "key": "category-1", "flows": 100, "packets": 0}, {"key": None, "flows": 2}]
    counted = totals(rows, "default")
    assert counted["category-1"] == 101 and counted["default"] == 2
    chart = bar_chart(counted, "other")
    assert len(chart.bars) == MAX_BARS and chart.bars[0].label == "category-1"
    assert chart.bars[0].width == BAR_AREA_WIDTH and chart.bars[-1].label == "other"
    assert chart.total == sum(counted.values())
    assert [bar.y for bar in chart.bars] == sorted(bar.y for bar in chart.bars)


def test_an_empty_chart_has_no_bars() -> None:
    assert bar_chart(Counter(), "other").bars == ()
