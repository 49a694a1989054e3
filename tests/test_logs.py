"""The log handler (recalled_lite/logs.py): access lines held for the end of the event loop's
turn, in order with every other record. The server-level checks are tests/test_operator_logs.py."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from recalled_lite import logs


class CountingStream:
    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in "".join(self.writes).splitlines()]


@pytest.fixture
def stream():
    """Logging as the server sets it up, on a stream that counts its writes. Set up in the
    test's own phase: pytest adds its capture handlers to "recalled_lite" for each phase, and
    a second handler sends access lines the logging way."""
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).level,
                    logging.getLogger(name).propagate) for name in ("recalled_lite", "uvicorn")}
    out = CountingStream()

    def configured() -> CountingStream:
        logs.configure_logging("info")
        logging.getLogger("recalled_lite").handlers[0].setStream(out)
        return out

    yield configured
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def test_the_access_lines_of_one_loop_turn_leave_in_one_write(stream):
    stream = stream()
    async def main():
        for n in range(32):
            logs.write_access_line({"request_id": f"req-{n}", "status": 201})
        during = list(stream.writes)
        await asyncio.sleep(0)
        return during

    during = asyncio.run(main())
    assert during == []
    assert len(stream.writes) == 1
    lines = stream.lines()
    assert [line["request_id"] for line in lines] == [f"req-{n}" for n in range(32)]
    assert all(line["msg"] == "request" and line["logger"] == "recalled_lite.access" for line in lines)


def test_any_other_record_comes_after_the_access_lines_held_before_it(stream):
    stream = stream()
    async def main():
        logs.write_access_line({"request_id": "req-first"})
        logging.getLogger("recalled_lite").error("writer stopped")
        logs.write_access_line({"request_id": "req-last"})
        await asyncio.sleep(0)

    asyncio.run(main())
    assert [line.get("request_id") or line["msg"] for line in stream.lines()] == [
        "req-first", "writer stopped", "req-last"]


def test_without_an_event_loop_the_line_is_written_at_once(stream):
    stream = stream()
    logs.write_access_line({"request_id": "req-sync"})
    assert [line["request_id"] for line in stream.lines()] == ["req-sync"]


def test_held_lines_are_written_when_logging_flushes_at_exit(stream):
    stream = stream()
    async def main():
        logs.write_access_line({"request_id": "req-at-exit"})
        # The loop stops before its next turn: logging.shutdown() flushes every handler.
        logging.getLogger("recalled_lite").handlers[0].flush()

    asyncio.run(main())
    assert [line["request_id"] for line in stream.lines()] == ["req-at-exit"]
