"""Bar charts drawn on the server as SVG geometry (the template writes the elements): no
script, no inline style, so they pass the console's Content-Security-Policy."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MAX_BARS = 10  # the rest are summed into one "other" bar
LABEL_WIDTH = 190
BAR_AREA_WIDTH = 330
VALUE_WIDTH = 80
ROW_HEIGHT = 26
BAR_HEIGHT = 18


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: int
    y: int
    width: int


@dataclass(frozen=True, slots=True)
class BarChart:
    bars: tuple[Bar, ...]
    height: int
    width: int = LABEL_WIDTH + BAR_AREA_WIDTH + VALUE_WIDTH
    label_width: int = LABEL_WIDTH
    bar_height: int = BAR_HEIGHT

    @property
    def total(self) -> int:
        return sum(bar.value for bar in self.bars)


def totals(rows: Iterable[Mapping[str, object]], none_label: str) -> Counter[str]:
    """Flows per key over every bucket of a stats answer (the API's /stats rows)."""
    counted: Counter[str] = Counter()
    for row in rows:
        key = row.get("key")
        flows = row.get("flows")
        if isinstance(flows, int):
            counted[str(key) if key is not None else none_label] += flows
    return counted


def bar_chart(counted: Counter[str], other_label: str) -> BarChart:
    """Largest first; bars scaled to the largest; labels cut to fit."""
    ranked = [(label, value) for label, value in counted.most_common() if value > 0]
    if len(ranked) > MAX_BARS:
        ranked = [*ranked[:MAX_BARS - 1], (other_label, sum(value for _, value in ranked[MAX_BARS - 1:]))]
    largest = max((value for _, value in ranked), default=0)
    bars = tuple(
        Bar(_clip(label), value, index * ROW_HEIGHT, max(1, round(BAR_AREA_WIDTH * value / largest)))
        for index, (label, value) in enumerate(ranked)
    )
    return BarChart(bars, max(ROW_HEIGHT, len(bars) * ROW_HEIGHT))


def _clip(label: str, limit: int = 28) -> str:
    return label if len(label) <= limit else label[:limit - 1] + "…"
