"""A transparent HTTP proxy in front of a model server that records inference request/response pairs.

Every request is forwarded unchanged (method, path, query, headers except hop-by-hop ones, body). For the
inference routes (Open Inference Protocol v2, KServe v1) the proxy also:

* takes the request id from ``X-Request-Id``, else ``Ce-Id``, else the OIP body ``id``, else assigns one
  (sent upstream as ``X-Request-Id``), and returns it to the caller in the ``X-Request-Id`` header;
* hands the raw pair to a :class:`~collector.capture.CaptureBuffer` (an O(1) append, dropped and counted
  when full); decoding happens in the sidecar's cycle, off the request path.

Server-sent events (``text/event-stream``) are streamed through chunk by chunk and not recorded; other
paths pass through untouched. The proxy adds no timeout of its own beyond the upstream connection: a slow
upstream holds the caller exactly as long as it would without the proxy, and an unreachable one is a 502 at
once.

    >>> app = Proxy("http://127.0.0.1:8080", CaptureBuffer())
    >>> uvicorn.run(app, host="127.0.0.1", port=9080)
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
from multidict import CIMultiDict

from collector.adapters.payloads import Exchange, Protocol, request_id_of, route
from collector.capture import CaptureBuffer

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)


class Proxy:
    """ASGI app: forward to ``upstream``, record inference pairs into ``capture``."""

    def __init__(
        self,
        upstream: str,
        capture: CaptureBuffer,
        *,
        max_capture_bytes: int = 4 << 20,
        connect_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.capture = capture
        self.max_capture_bytes = int(max_capture_bytes)
        self._connect_timeout = connect_timeout
        self._clock = clock
        self._client: aiohttp.ClientSession | None = None
        self.requests_total = 0
        self.upstream_errors_total = 0

    def _http(self) -> aiohttp.ClientSession:
        # aiohttp rather than httpx here: on loopback httpx's async client added ~17 ms per request (measured
        # with benchmarks/proxy_benchmark.py), aiohttp under 1 ms.
        if self._client is None:
            self._client = aiohttp.ClientSession(
                # No total/read timeout: the caller waits exactly as long as the upstream takes.
                timeout=aiohttp.ClientTimeout(total=None, connect=self._connect_timeout),
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
                auto_decompress=False,  # forward the body as the upstream sent it
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        self.requests_total += 1
        body = await _read_body(receive)
        path: str = scope["path"]
        r = route(path) if scope["method"] == "POST" else None
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        rid: str | None = None
        if r is not None:
            rid = _header(headers, b"x-request-id") or _header(headers, b"ce-id")
            if rid is None and r.protocol is Protocol.OIP_V2:
                rid = request_id_of(body)
            if rid is None:
                rid = uuid.uuid4().hex
            if _header(headers, b"x-request-id") is None:
                headers.append((b"x-request-id", rid.encode()))
        url = self.upstream + path + (("?" + scope["query_string"].decode("latin-1")) if scope.get("query_string") else "")
        client = self._http()
        fwd = CIMultiDict((k.decode("latin-1"), v.decode("latin-1")) for k, v in headers)
        started = time.perf_counter()
        try:
            try:
                resp = await client.request(scope["method"], url, headers=fwd, data=body, allow_redirects=False)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                # A pooled keep-alive connection the upstream had just closed: the request never reached
                # it (no response byte came back), so it is sent once more on a fresh connection.
                resp = await client.request(scope["method"], url, headers=fwd, data=body, allow_redirects=False)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.upstream_errors_total += 1
            log.warning("upstream %s unreachable: %s %s", self.upstream, type(exc).__name__, exc)
            await _plain(send, 502, f"upstream unreachable: {type(exc).__name__}".encode(), rid)
            return
        try:
            out_headers = [(k, v) for k, v in resp.raw_headers if k.lower() not in HOP_BY_HOP]
            if rid is not None:
                out_headers = [(k, v) for k, v in out_headers if k.lower() != b"x-request-id"]
                out_headers.append((b"x-request-id", rid.encode()))
            streaming = "text/event-stream" in resp.headers.get("content-type", "")
            if streaming or r is None:
                await send({"type": "http.response.start", "status": resp.status, "headers": out_headers})
                async for chunk in resp.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            raw = await resp.read()
            latency = time.perf_counter() - started
            out_headers.append((b"content-length", str(len(raw)).encode()))
            # Handing the pair over is O(1) (a bounded deque append), so it happens before the answer goes
            # out: a caller that got its answer can count on the pair being recorded.
            assert rid is not None
            if len(body) + len(raw) <= self.max_capture_bytes:
                self.capture.put(
                    Exchange(
                        request_id=rid,
                        path=path,
                        request_body=body,
                        response_body=raw,
                        status=resp.status,
                        latency_seconds=latency,
                        ts=self._clock(),
                        response_encoding=resp.headers.get("content-encoding", ""),
                    )
                )
            else:
                self.capture.dropped_total += 1
            await send({"type": "http.response.start", "status": resp.status, "headers": out_headers})
            await send({"type": "http.response.body", "body": raw, "more_body": False})
        finally:
            resp.release()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            break
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body", False):
            break
    return b"".join(chunks)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for k, v in headers:
        if k.lower() == name and v:
            return v.decode("latin-1")
    return None


async def _plain(send: Send, status: int, body: bytes, rid: str | None) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    if rid is not None:
        headers.append((b"x-request-id", rid.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
