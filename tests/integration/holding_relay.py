"""A TCP relay in front of a server that holds the HTTP requests a predicate picks until the test decides.

The test lets a held request through (the server applies it) or drops it (the server never sees it). Every
other request is piped through untouched. Each request is judged on its own connection: incidentd's admin
client opens one per call.

    >>> relay = HoldingRelay(upstream_port=8080)
    >>> relay.arm(lambda head, body: head.startswith(b"POST /admin/load"))
    >>> relay.wait_held(30)          # the service is now blocked inside the admin call
    >>> relay.release()              # or relay.drop()
"""
from __future__ import annotations

import socket
import threading
from collections.abc import Callable

Predicate = Callable[[bytes, bytes], bool]    # (request head, body) -> hold it?


def _read_message(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """One HTTP message (head with its blank line, body by Content-Length); None when the peer closed first."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        body += chunk
    return head + b"\r\n\r\n", body


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class HoldingRelay:
    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._hold: Predicate | None = None
        self._held: list[tuple[socket.socket, bytes, bytes]] = []
        self._cond = threading.Condition()
        self._closed = False
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()

    def arm(self, predicate: Predicate) -> None:
        """Hold every request the predicate picks, from now until release() or drop()."""
        with self._cond:
            self._hold = predicate

    def wait_held(self, timeout: float) -> list[bytes]:
        """Block until a request is held; returns the request lines held so far (empty on timeout)."""
        with self._cond:
            self._cond.wait_for(lambda: bool(self._held), timeout)
            return [h.split(b"\r\n", 1)[0] for _, h, _ in self._held]

    def release(self) -> list[int]:
        """Disarm; send each held request to the server and read its answer; returns the status codes."""
        codes = []
        for client, head, body in self._take():
            with socket.create_connection(self.upstream, timeout=60) as up:
                up.sendall(head + body)
                answer = _read_message(up)
            assert answer is not None, "the server closed the connection without answering"
            codes.append(int(answer[0].split(b" ", 2)[1]))
            client.close()           # the client that sent it is gone (killed): nobody reads the answer
        return codes

    def drop(self) -> int:
        """Disarm; close each held request unsent: the server never sees it. Returns how many."""
        held = self._take()
        for client, _, _ in held:
            client.close()
        return len(held)

    def close(self) -> None:
        self._closed = True
        self.drop()
        self._listener.close()

    def _take(self) -> list[tuple[socket.socket, bytes, bytes]]:
        with self._cond:
            self._hold = None
            held, self._held = self._held, []
            return held

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), name="relay-conn", daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            first = _read_message(client)
        except OSError:
            first = None
        if first is None:
            client.close()
            return
        head, body = first
        with self._cond:
            if self._hold is not None and self._hold(head, body):
                self._held.append((client, head, body))
                self._cond.notify_all()
                return
        try:
            up = socket.create_connection(self.upstream, timeout=60)
        except OSError:
            client.close()
            return
        up.sendall(head + body)
        back = threading.Thread(target=_pipe, args=(up, client), daemon=True)
        back.start()
        _pipe(client, up)
        back.join()
        up.close()
        client.close()
