"""A loopback TCP proxy that can make its open connections half-open: it stops forwarding without closing.

Both ends keep their sockets and see nothing wrong at the TCP level; only silence tells them. New
connections made after `stall()` are forwarded normally, as when a NAT or load balancer drops one flow.
With `latency_s`, every chunk is forwarded that long after it arrived, each way: a slow link.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from types import TracebackType
from typing import Self


class StallingProxy:
    def __init__(self, target: str, *, latency_s: float = 0.0) -> None:
        self._latency_s = latency_s
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._flows: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._flows)

    def stall(self) -> int:
        """Stop forwarding on every open connection (they stay open); returns how many were stalled."""
        with self._lock:
            for _, _, flowing in self._flows:
                flowing.clear()
            return len(self._flows)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            flows, self._flows = self._flows, []
        self._listener.close()
        for client, upstream, flowing in flows:
            flowing.set()
            for sock in (client, upstream):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            flowing = threading.Event()
            flowing.set()
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._flows.append((client, upstream, flowing))
            for source, sink in ((client, upstream), (upstream, client)):
                chunks: queue.SimpleQueue[tuple[float, bytes | None]] = queue.SimpleQueue()
                threading.Thread(target=self._pump, args=(source, chunks, flowing), daemon=True).start()
                threading.Thread(target=self._deliver, args=(chunks, sink, flowing), daemon=True).start()

    def _pump(
        self, source: socket.socket, chunks: queue.SimpleQueue[tuple[float, bytes | None]], flowing: threading.Event
    ) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if not flowing.is_set():
                    chunks.put((0.0, None))  # stalled: hold the sockets open and forward nothing, ever
                    return
                chunks.put((time.monotonic() + self._latency_s, data))
        except OSError:
            pass
        chunks.put((time.monotonic() + self._latency_s, b""))

    @staticmethod
    def _deliver(
        chunks: queue.SimpleQueue[tuple[float, bytes | None]], sink: socket.socket, flowing: threading.Event
    ) -> None:
        """Each chunk to `sink` once its time has come, in order; an empty one ends the flow."""
        try:
            while True:
                due, data = chunks.get()
                if data is None or not flowing.is_set():
                    return  # stalled: what was on its way is not delivered, and the socket stays open
                if (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)  # the link's latency: this flow's delivery waits for its time
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
