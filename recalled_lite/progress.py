"""A progress bar for long CLI work, drawn only when stderr is a terminal.

With `lines=True` a run without a terminal (nohup, a CI job, `2> log`) gets plain lines
instead: one per tenth of the total (or per LINE_SECONDS without a total), so a long copy
shows that it moves without filling a log with carriage returns."""

from __future__ import annotations

import sys
import time
from typing import TextIO


LINE_SECONDS = 10.0


class Progress:
    def __init__(self, label: str, total: int | None = None, stream: TextIO | None = None,
                 force: bool = False, lines: bool = False) -> None:
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = force or self.stream.isatty()
        self.started = time.monotonic()
        self.lines = lines and not self.enabled
        self._last_line = (0, self.started)  # (tenth of the total, time) of the last line
        self._last_draw = 0.0
        self.done = 0

    def update(self, done: int, total: int | None = None) -> None:
        self.done = done
        if total is not None:
            self.total = total
        now = time.monotonic()
        if self.enabled and (now - self._last_draw >= 0.1 or (self.total and done >= self.total)):
            self._last_draw = now
            self._draw(now)
        elif self.lines:
            self._line(now)

    def _line(self, now: float, final: bool = False) -> None:
        tenth = int(10 * self.done / self.total) if self.total else 0
        if not final and (tenth <= self._last_line[0] if self.total
                          else now - self._last_line[1] < LINE_SECONDS):
            return
        self._last_line = (tenth, now)
        rate = self.done / max(now - self.started, 1e-9)
        of = f"/{self.total:,} ({self.done / self.total:.0%})" if self.total else ""
        self.stream.write(f"{self.label}: {self.done:,}{of} {rate:,.0f}/s\n")
        self.stream.flush()

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        if self.total:
            fraction = min(self.done / self.total, 1.0)
            bar = "#" * int(fraction * 30)
            text = f"\r{self.label} [{bar:<30}] {fraction:6.1%} {self.done:,}/{self.total:,} {rate:,.0f}/s"
        else:
            text = f"\r{self.label} {self.done:,} {rate:,.0f}/s"
        self.stream.write(text)
        self.stream.flush()

    def finish(self) -> None:
        if self.lines and self._last_line[0] < 10:
            self._line(time.monotonic(), final=True)
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
