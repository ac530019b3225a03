"""The blocking and the asyncio client offer the same methods, with the same arguments, each documented.

The README promises `AsyncClient` is `Client` awaited; this keeps the two
from drifting apart when one of them gets a method or an argument.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from aivcs.ledger import AsyncClient, AsyncEventWriter, AsyncRunSession, Client, EventWriter, RunSession
from aivcs.ledger._async_client import AsyncEvents, AsyncReleases, AsyncRuns
from aivcs.ledger._client import Events, Releases, Runs

PAIRS = [
    (Client, AsyncClient),
    (Runs, AsyncRuns),
    (Events, AsyncEvents),
    (Releases, AsyncReleases),
    (RunSession, AsyncRunSession),
    (EventWriter, AsyncEventWriter),
]
# Where asyncio bounds a wait with `asyncio.timeout` instead of an argument.
TIMEOUT_ONLY_IN_SYNC = {"EventWriter.flush", "EventWriter.close", "RunSession.flush"}


def public(cls: type) -> dict[str, Any]:
    return {name: value for name, value in inspect.getmembers(cls) if not name.startswith("_")}


def parameters(function: Any) -> list[tuple[str, Any, Any]]:
    signature = inspect.signature(function)
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


@pytest.mark.parametrize(("sync", "asynchronous"), PAIRS, ids=[s.__name__ for s, _ in PAIRS])
def test_both_clients_have_the_same_public_methods_and_arguments(sync: type, asynchronous: type) -> None:
    mine, theirs = public(sync), public(asynchronous)
    assert sorted(mine) == sorted(theirs)
    for name, member in mine.items():
        if not callable(member) or isinstance(member, type):
            continue
        expected = parameters(member)
        if f"{sync.__name__}.{name}" in TIMEOUT_ONLY_IN_SYNC:
            expected = [p for p in expected if p[0] != "timeout"]
        assert parameters(theirs[name]) == expected, f"{asynchronous.__name__}.{name}"


@pytest.mark.parametrize(("sync", "asynchronous"), PAIRS, ids=[s.__name__ for s, _ in PAIRS])
def test_every_public_method_of_both_clients_has_a_docstring(sync: type, asynchronous: type) -> None:
    for cls in (sync, asynchronous):
        undocumented = [
            name
            for name, member in public(cls).items()
            if (callable(member) or isinstance(member, property)) and not inspect.getdoc(member)
        ]
        assert undocumented == [], f"{cls.__name__}: {undocumented}"


@pytest.mark.parametrize(("sync", "asynchronous"), PAIRS, ids=[s.__name__ for s, _ in PAIRS])
def test_the_asyncio_client_awaits_what_the_blocking_one_blocks_on(sync: type, asynchronous: type) -> None:
    for name, member in public(asynchronous).items():
        if not inspect.isfunction(member):
            continue
        awaited = inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member)
        blocking = inspect.isgeneratorfunction(getattr(sync, name))
        if name in {"start_run", "writer"}:  # they only make an object; entering it is awaited
            assert not awaited, f"{asynchronous.__name__}.{name}"
        else:
            assert awaited or blocking, f"{asynchronous.__name__}.{name} is neither awaited nor iterated"
