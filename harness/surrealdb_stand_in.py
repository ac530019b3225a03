"""A stand-in SurrealDB server for tests and benchmarks: WebSocket RPC relayed to the embedded engine.

No SurrealDB server binary can be installed on the machines these tests run on,
but the SDK's embedded engine executes exactly the CBOR RPC frames the SDK's
WebSocket connection sends to a server (`AsyncEmbeddedDB.execute(frame) ->
reply frame`). This process accepts WebSocket connections on `/rpc` (the
`cbor` subprotocol), hands every binary frame to one shared engine and sends
the reply back, answering frames concurrently as a server does (a slow query
does not hold up the others on its connection or on other connections).

What it covers: the daemon's `ws://` code path (SDK WebSocket transport,
reconnects after the server goes away), and the engine's own transactions and
conflict detection, shared by every client as on a real server. What it does
not: server authentication (no users; sign-in is not supported), per-connection
sessions (one engine session for all clients, so every client must `use` the
same namespace and database), live queries, and distributed storage (TiKV).

Run it as a process:

    python -m harness.surrealdb_stand_in --listen 127.0.0.1:0 --engine mem://

It prints `ws://HOST:PORT` on a line of its own once it accepts connections.
From tests, use `stand_in_server()`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import websockets
from surrealdb_embedded import AsyncEmbeddedDB
from websockets.asyncio.server import ServerConnection, serve

READY_PREFIX = "ws://"


async def _open_engine(url: str) -> Any:
    if url.startswith(("surrealkv://", "file://")):
        # The bundled SurrealKV, when an open repairs a torn last WAL record (a
        # SIGKILL mid-write), goes on writing into the replaced file; a second
        # open writes to the repaired one. The daemon opens its embedded
        # engines the same way.
        first = AsyncEmbeddedDB(url)
        await first.connect()
        await first.close()
    engine = AsyncEmbeddedDB(url)
    await engine.connect()
    return engine


async def _relay(engine: Any, connection: ServerConnection) -> None:
    """Answer each frame in its own task; replies go back in completion order."""
    pending: set[asyncio.Task[None]] = set()

    async def answer(frame: bytes) -> None:
        reply = await engine.execute(frame)
        with contextlib.suppress(websockets.ConnectionClosed):
            await connection.send(reply)

    try:
        async for frame in connection:
            if isinstance(frame, str):
                frame = frame.encode()
            task = asyncio.create_task(answer(frame))
            pending.add(task)
            task.add_done_callback(pending.discard)
    except websockets.ConnectionClosed:
        pass


async def serve_engine(host: str, port: int, engine_url: str) -> None:
    engine = await _open_engine(engine_url)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    try:
        async with serve(
            lambda connection: _relay(engine, connection),
            host,
            port,
            subprotocols=[websockets.Subprotocol("cbor")],
            max_size=None,
        ) as server:
            bound = next(iter(server.sockets)).getsockname()
            print(f"{READY_PREFIX}{bound[0]}:{bound[1]}", flush=True)
            await stop.wait()
    finally:
        await engine.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any free port)")
    parser.add_argument("--engine", default="mem://", help="mem:// or surrealkv://PATH")
    options = parser.parse_args(argv)
    host, _, port = options.listen.rpartition(":")
    asyncio.run(serve_engine(host, int(port), options.engine))
    # The engine's Rust threads can panic while Python finalizes (as the daemon's
    # cli.main notes); everything is closed by now, so leave at once.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@dataclass
class StandIn:
    """A running stand-in server; `url` is what the daemon's `--db` takes."""

    process: subprocess.Popen[str]
    url: str
    engine: str
    listen: str
    log_path: Path

    def kill(self) -> None:
        """SIGKILL, as a crashed server."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self, timeout: float = 30) -> None:
        """Kill the server and start it again on the same port and engine (data kept on SurrealKV)."""
        self.kill()
        fresh = start_stand_in(self.log_path.parent, self.engine, self.listen, timeout)
        self.process, self.url, self.log_path = fresh.process, fresh.url, fresh.log_path


def start_stand_in(tmp: Path, engine: str = "mem://", listen: str = "127.0.0.1:0", timeout: float = 30) -> StandIn:
    """Start the server as a subprocess and wait for its ready line."""
    log_path = tmp / f"stand-in-{time.monotonic_ns()}.log"
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    args = [sys.executable, "-m", "harness.surrealdb_stand_in", "--listen", listen, "--engine", engine]
    deadline = time.monotonic() + timeout
    while True:
        with log_path.open("w") as log:
            process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True, cwd=root, env=env)
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if line.startswith(READY_PREFIX):
            host_port = line.removeprefix(READY_PREFIX)
            return StandIn(process, line, engine, host_port, log_path)
        process.wait(timeout=30)
        # A restart on the same port can race the old socket's release: try again until the deadline.
        if time.monotonic() > deadline:
            raise RuntimeError(f"stand-in server did not start:\n{log_path.read_text()}")
        time.sleep(0.1)


@contextlib.contextmanager
def stand_in_server(tmp: Path, engine: str = "mem://") -> Iterator[StandIn]:
    """A stand-in server for the duration of the block; yields it (`.url` is the ws:// URL)."""
    server = start_stand_in(tmp, engine)
    try:
        yield server
    finally:
        server.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
