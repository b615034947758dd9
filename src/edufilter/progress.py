"""Progress of long jobs (imports, downloads): a bar on a terminal, a few plain lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

# Called now and then with (bytes done, bytes in all); total is 0 when it is not known.
ProgressCallback = Callable[[int, int], None]
# Called with the label of each long step of a job (a download, an import); returns its callback.
StepProgress = Callable[[str], ProgressCallback]

_BAR_WIDTH = 30
_REDRAW_SECONDS = 0.1
_PLAIN_STEPS = 4  # a plain-text log gets a line at 25, 50, 75 and 100 %


class ProgressBar:
    """A ProgressCallback drawing `label [#####.....]  50%  12.0/24.0 MiB` on stderr.

    On a terminal the bar is redrawn in place (at most ten times a second); in a log or a
    pipe it writes one line per quarter done. close() ends the bar's line.
    """

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = self.stream.isatty()
        self._drawn_at = 0.0
        self._steps_written = 0
        self._open = False

    def __call__(self, done: int, total: int) -> None:
        if self.interactive:
            now = time.monotonic()
            if now - self._drawn_at >= _REDRAW_SECONDS or (total and done >= total):
                self._drawn_at = now
                self.stream.write("\r" + _bar_line(self.label, done, total))
                self.stream.flush()
                self._open = True
            return
        step = done * _PLAIN_STEPS // total if total > 0 else 0
        if step > self._steps_written:
            self._steps_written = min(step, _PLAIN_STEPS)
            self.stream.write(f"{self.label}: {_amount(done, total)}\n")
            self.stream.flush()

    def close(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def _bar_line(label: str, done: int, total: int) -> str:
    if total <= 0:
        return f"{label}  {_mib(done)} MiB"
    filled = min(_BAR_WIDTH, done * _BAR_WIDTH // total)
    return f"{label} [{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {_amount(done, total)}"


def _amount(done: int, total: int) -> str:
    return f"{min(100, done * 100 // total):3d}%  {_mib(done)}/{_mib(total)} MiB"


def _mib(count: int) -> str:
    return f"{count / (1 << 20):.1f}"


class ProgressSteps:
    """Makes a ProgressBar for each step of a job (download, import), ending the previous one."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.current: ProgressBar | None = None

    def __call__(self, label: str) -> ProgressBar:
        self.close()
        self.current = ProgressBar(label, self.stream)
        return self.current

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None
