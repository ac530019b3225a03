"""Several daemon replicas on one stand-in SurrealDB server, for the scale-out tests and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.daemon import DaemonProcess, start_daemon


def start_replicas(
    tmp: Path, db: str, count: int = 3, extra: Sequence[str] = (), env: dict[str, str] | None = None
) -> list[DaemonProcess]:
    """Start `count` daemons on `db` at the same moment; each is SERVING when this returns.

    Raises the first start-up failure, after stopping the replicas that did start.
    """
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(start_daemon, tmp, db, extra, env, 60) for _ in range(count)]
    started = [f.result() for f in futures if f.exception() is None]
    failures = [f.exception() for f in futures if f.exception() is not None]
    if failures:
        stop_replicas(started)
        raise failures[0]  # type: ignore[misc]
    return started


def stop_replicas(replicas: Sequence[DaemonProcess]) -> None:
    for replica in replicas:
        replica.stop()
