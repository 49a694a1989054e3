"""Slow-body clients for the `trickle` scenario: N connections that send a request head and then
one body byte per second, reconnecting whenever the server cuts them off (408 at
server.body_timeout_seconds), so that N of them are trickling for the whole measured run."""

from __future__ import annotations

import asyncio
import threading
import time

BODY_BYTES = 4096


class Tricklers:
    def __init__(self, port: int, key: str, count: int, interval: float = 1.0) -> None:
        self.port, self.key, self.count, self.interval = port, key, count, interval
        self.connected = 0
        self.cut_off = 0        # connections the server ended (408, or closed)
        self.refused = 0        # connections that could not be opened
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="tricklers", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while self.connected < self.count and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        tasks = [asyncio.create_task(self._one()) for _ in range(self.count)]
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _one(self) -> None:
        head = (f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {self.key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {BODY_BYTES}\r\n\r\n").encode()
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                self.refused += 1
                await asyncio.sleep(self.interval)
                continue
            self.connected += 1
            try:
                writer.write(head + b"{")
                for _ in range(BODY_BYTES - 1):
                    try:
                        answer = await asyncio.wait_for(reader.read(65536), self.interval)
                    except asyncio.TimeoutError:
                        writer.write(b" ")
                        continue
                    if answer or reader.at_eof():
                        break
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                self.connected -= 1
                self.cut_off += 1
                writer.close()
