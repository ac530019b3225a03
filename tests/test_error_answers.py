"""An error answer frees its call at once: nothing of it waits for the cyclic garbage collector.

A call answered by raising (grpc.aio's `context.abort`) stays in a reference
cycle with its request and its core call, which holds what the connection
delivered; the daemon collects rarely (process/collector.py), so a flood of
refused 8 MiB calls held a hundred MB (tests/test_budgets.py). Here every
way the daemon refuses a call is made on the real daemon, and the cyclic
garbage it left is searched for server call state and request messages.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import grpc
import pytest
from aivcs.ledger.v1 import event_pb2
from aivcs.ledger.v1 import event_stream_pb2 as es
from aivcs.ledger.v1 import run_ledger_pb2 as rl

from aivcs_ledgerd.process.app import Daemon
from harness.inprocess import Stubs, channel, running

TOKEN = "answers-token-0123456789abcdef0123"
APPEND = "/aivcs.ledger.v1.EventStream/AppendEvents"
Call = Callable[[Stubs, grpc.aio.Channel], Awaitable[object]]


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"read-write {TOKEN}\n")
    async with running(auth_token_file=tokens, max_streams_per_connection=1) as started:
        yield started


@contextmanager
def cyclic_garbage() -> Iterator[list[str]]:
    """The type names of what the block leaves to the cyclic collector that hold a call.

    gc.DEBUG_SAVEALL keeps that garbage for a look; it is freed again here, inside the test, while
    the daemon and its loop still run: kept past the test, it would be collected during a later one,
    whose teardown would then see the errors of grpc objects finalized without their loop.
    """
    gc.collect()
    found: list[str] = []
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield found
        gc.collect()
        found.extend(sorted({type(thing).__qualname__ for thing in gc.garbage if _holds_a_call(thing)}))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.collect()


def _big_append(run_id: str, kind: str = "big") -> es.AppendEventsRequest:
    return es.AppendEventsRequest(run_id=run_id, events=[event_pb2.EventInput(kind=kind, payload={"x": "y" * 4096})])


async def no_token(stubs: Stubs, ch: grpc.aio.Channel) -> object:
    return await Stubs(ch).events.AppendEvents(_big_append("r1"), timeout=10)


async def undecodable(stubs: Stubs, ch: grpc.aio.Channel) -> object:
    return await ch.unary_unary(APPEND)(b"\xff\xff\xff", metadata=stubs.metadata, timeout=10)


async def invalid_argument(stubs: Stubs, ch: grpc.aio.Channel) -> object:
    return await stubs.events.AppendEvents(_big_append("r1", kind=""), metadata=stubs.metadata, timeout=10)


async def not_found_stream(stubs: Stubs, ch: grpc.aio.Channel) -> object:
    request = es.ReadEventsRequest(run_id="a" * 32)
    return [reply async for reply in stubs.events.ReadEvents(request, metadata=stubs.metadata, timeout=10)]


async def over_the_connection_limit(stubs: Stubs, ch: grpc.aio.Channel) -> object:
    return await stubs.runs.GetRun(rl.GetRunRequest(run_id="a" * 32), metadata=stubs.metadata, timeout=10)


# What each call is answered; the last says whether the connection's one call must be taken first.
REFUSALS: dict[str, tuple[Call, grpc.StatusCode, bool]] = {
    "no token": (no_token, grpc.StatusCode.UNAUTHENTICATED, False),
    "undecodable request": (undecodable, grpc.StatusCode.INVALID_ARGUMENT, False),
    "invalid argument": (invalid_argument, grpc.StatusCode.INVALID_ARGUMENT, False),
    "not found, streaming": (not_found_stream, grpc.StatusCode.NOT_FOUND, False),
    "over the connection's call limit": (over_the_connection_limit, grpc.StatusCode.RESOURCE_EXHAUSTED, True),
}


@asynccontextmanager
async def connection_held(stubs: Stubs, held: bool) -> AsyncIterator[None]:
    """With `held`, a live subscription takes the connection's one call for the block."""
    if not held:
        yield
        return
    run_id = await stubs.create()
    live = stubs.events.SubscribeEvents(es.SubscribeEventsRequest(run_id=run_id), metadata=stubs.metadata)
    await asyncio.sleep(0.2)  # until the daemon has started it
    try:
        yield
    finally:
        live.cancel()  # outside the measured block: a cancelled client call leaves garbage of its own


@pytest.mark.parametrize("name", list(REFUSALS))
async def test_a_refused_call_leaves_no_cycle_holding_it(daemon: Daemon, name: str) -> None:
    make_call, expected, hold = REFUSALS[name]
    async with channel(daemon) as ch:
        stubs = Stubs(ch, TOKEN)
        async with connection_held(stubs, hold):
            with pytest.raises(grpc.aio.AioRpcError) as first:  # the first call of a kind warms caches up
                await make_call(stubs, ch)
            assert first.value.code() is expected, first.value.details()
            with cyclic_garbage() as garbage:
                for _ in range(5):
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await make_call(stubs, ch)
                    assert refused.value.code() is expected
                await asyncio.sleep(0.1)  # let the server's side of the last call finish
    assert not garbage, f"{name}: cyclic garbage holds {garbage}"


def _holds_a_call(thing: object) -> bool:
    kind = type(thing)
    return kind.__qualname__ in ("RPCState", "_ServicerContext") or kind.__module__.startswith("aivcs.ledger.v1")
