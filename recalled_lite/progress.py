"""A progress bar for long CLI work, drawn only when stderr is a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, label: str, total: int | None = None, stream: TextIO | None = None,
                 force: bool = False) -> None:
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = force or self.stream.isatty()
        self.started = time.monotonic()
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
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
