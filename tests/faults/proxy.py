"""A TCP proxy in front of a real server, to make that server hang or go down and come back."""

from __future__ import annotations

import asyncio
import contextlib


class FaultProxy:
    """Forwards ``127.0.0.1:port`` to ``upstream``; ``hang()``, ``down()`` and ``restore()``.

    Hung: connections are accepted (new and open ones alike) but nothing is forwarded, so the
    client waits for an answer that never comes. Down: the port is closed and every open
    connection dropped, so connecting is refused.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        """Listen (on the same port as before, after a ``down()``)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def hang(self) -> None:
        """Stop forwarding; connections stay open and unanswered."""
        self._flowing.clear()

    async def down(self) -> None:
        """Stop listening and drop every connection."""
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        self._drop_connections()

    async def restore(self) -> None:
        """Forward again, listening again when down."""
        if self._server is None:
            await self.start()
        self._flowing.set()

    async def close(self) -> None:
        """Stop for good."""
        if self._server is not None:
            await self.down()
        self._flowing.set()

    def _drop_connections(self) -> None:
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        await asyncio.gather(
            self._pipe(reader, up_writer),
            self._pipe(up_reader, writer),
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        writer.close()
        self._writers.discard(writer)
