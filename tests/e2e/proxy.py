"""A tiny HTTP proxy between a store agent and the central server, to break what a network or a
server of another version would break: an answer lost after the central server committed, an
answer in a shape the agent does not know, or one acknowledging more than was sent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tests.e2e.processes import free_port

#: Headers a proxy must not copy from one connection to the other.
HOP_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
SESSION = web.AppKey("session", aiohttp.ClientSession)


@dataclass
class Proxy:
    """Forwards everything to ``target``, with the faults asked for."""

    target: str
    #: Answers of this many successful uploads are dropped after the central server committed
    #: them: the connection closes with no response.
    drop_uploads: int = 0
    #: Fields added to the central server's greeting (as a newer server might send).
    hello_extra: dict[str, Any] | None = None
    #: Added to the ``acked_seq`` of upload answers (a server acknowledging past the batch).
    acked_beyond: int = 0
    uploads: int = 0
    dropped: int = 0
    hellos: int = 0
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        session = request.app[SESSION]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        async with session.request(
            request.method,
            self.target + request.path_qs,
            headers=headers,
            data=await request.read(),
            auto_decompress=False,
        ) as upstream:
            body = await upstream.read()
            answer_headers = {
                k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS
            }
            status = upstream.status
        if request.path == "/sync/v1/hello":
            self.hellos += 1
            if status == 200 and self.hello_extra:
                body = json.dumps({**json.loads(body), **self.hello_extra}).encode()
        if request.path == "/sync/v1/upload":
            self.uploads += 1
            if status == 200 and self.acked_beyond:
                answer = json.loads(body)
                answer["acked_seq"] += self.acked_beyond
                body = json.dumps(answer).encode()
            if status == 200 and self.dropped < self.drop_uploads:
                # The central server has committed the batch; the store never hears of it.
                self.dropped += 1
                assert request.transport is not None
                request.transport.abort()
        return web.Response(body=body, status=status, headers=answer_headers)


@asynccontextmanager
async def serve_proxy(proxy: Proxy) -> AsyncIterator[Proxy]:
    """The proxy listening on its port."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)

    async def session(app: web.Application) -> AsyncIterator[None]:
        app[SESSION] = aiohttp.ClientSession()
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", proxy.port).start()
        yield proxy
    finally:
        await runner.cleanup()
