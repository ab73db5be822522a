"""An asyncio TCP proxy on 127.0.0.1 that injects network faults between the gateway and the API.

It reads whole HTTP/1.1 messages (Content-Length framing, which is what httpx sends and the API
answers) and opens a fresh upstream connection per request. Each request takes the next fault from
a script (``PASS`` once the script is empty):

- ``CLOSE_AFTER_FORWARD``: the request reaches the API and is answered (so the server commits), then
  the proxy closes the client's connection without a byte of the answer;
- ``RESET_MID_RESPONSE``: the client gets the status line, headers and half the body, then a TCP RST;
- ``LATENCY``: the request is held for ``latency_s`` before it is forwarded;
- ``BLACKHOLE``: from this request on, for ``blackhole_s``, requests are swallowed: nothing is
  forwarded and nothing answered (the client times out); connections stay open;
- ``DUPLICATE``: the request is sent to the API twice at once; the client gets one of the answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
import threading
import time


class Fault(enum.Enum):
    PASS = "pass"
    CLOSE_AFTER_FORWARD = "close_after_forward"
    RESET_MID_RESPONSE = "reset_mid_response"
    LATENCY = "latency"
    BLACKHOLE = "blackhole"
    DUPLICATE = "duplicate"


class _Closed(Exception):
    """The peer closed the connection between messages."""


async def _read_message(reader: asyncio.StreamReader, until_eof_without_length: bool) -> tuple[bytes, bytes]:
    """One HTTP message: (head, body). Raises _Closed on a clean close before a message starts."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise _Closed from None
        raise
    headers = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise NotImplementedError("the fault proxy handles Content-Length framing only")
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif until_eof_without_length:
        body = await reader.read()
    else:
        body = b""
    return head, body


def _keeps_alive(head: bytes) -> bool:
    text = head.decode("latin-1").lower()
    return text.startswith("http/1.1") and "connection: close" not in text


class FaultProxy:
    """Runs its own event loop in a thread; ``url`` is where the gateway should send its requests."""

    def __init__(self, upstream_port: int, latency_s: float = 0.5, blackhole_s: float = 3.0) -> None:
        self.upstream_port = upstream_port
        self.latency_s = latency_s
        self.blackhole_s = blackhole_s
        self.script: list[Fault] = []
        self.applied: list[Fault] = []
        self.answers: list[bytes] = []  # every body the API sent back, delivered to the client or not
        self._lock = threading.Lock()
        self._blackhole_until = 0.0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        ).result(timeout=5)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def _next_fault(self) -> Fault:
        with self._lock:
            if time.monotonic() < self._blackhole_until:
                return Fault.BLACKHOLE
            fault = self.script.pop(0) if self.script else Fault.PASS
            if fault is Fault.BLACKHOLE:
                self._blackhole_until = time.monotonic() + self.blackhole_s
            self.applied.append(fault)
            return fault

    async def _exchange(self, request: bytes) -> tuple[bytes, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            writer.write(request)
            await writer.drain()
            head, body = await _read_message(reader, until_eof_without_length=True)
            self.answers.append(body)
            return head, body
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head, body = await _read_message(reader, until_eof_without_length=False)
                fault = self._next_fault()
                if fault is Fault.BLACKHOLE:
                    while await reader.read(65536):
                        pass
                    return
                if not await self._relay(fault, head + body, writer):
                    return
        except (_Closed, asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            return
        finally:
            writer.close()

    async def _relay(self, fault: Fault, request: bytes, writer: asyncio.StreamWriter) -> bool:
        """Forward one request under ``fault``; False when the client connection must end."""
        if fault is Fault.LATENCY:
            await asyncio.sleep(self.latency_s)
        if fault is Fault.DUPLICATE:
            answers = await asyncio.gather(self._exchange(request), self._exchange(request))
            head, body = answers[0]
        else:
            head, body = await self._exchange(request)
        if fault is Fault.CLOSE_AFTER_FORWARD:
            return False
        if fault is Fault.RESET_MID_RESPONSE:
            writer.write(head + body[: len(body) // 2])
            await writer.drain()
            await asyncio.sleep(0.05)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        writer.write(head + body)
        await writer.drain()
        return _keeps_alive(head)
