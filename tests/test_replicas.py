"""Several daemon replicas on one SurrealDB server (the stand-in, tests/surrealdb_stand_in.py) act as one ledger."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.daemon import assert_serving
from tests.replicas import check_stored, create_runs, start_replicas, stop_replicas, write
from tests.surrealdb_stand_in import stand_in_server


@pytest.mark.parametrize("engine", ["mem://", "surrealkv"])
def test_replicas_started_together_on_an_empty_database_all_serve(tmp_path: Path, engine: str) -> None:
    for attempt in range(3):
        folder = tmp_path / f"attempt-{attempt}"
        folder.mkdir()
        engine_url = f"surrealkv://{folder / 'kv'}" if engine == "surrealkv" else engine
        with stand_in_server(folder, engine_url) as server:
            replicas = start_replicas(folder, server.url, 3)
            try:
                for replica in replicas:
                    assert_serving(replica)
            finally:
                stop_replicas(replicas)


@pytest.mark.parametrize("engine", ["mem://", "surrealkv"])
def test_writers_on_shared_runs_through_three_replicas_lose_and_misplace_nothing(tmp_path: Path, engine: str) -> None:
    engine_url = f"surrealkv://{tmp_path / 'kv'}" if engine == "surrealkv" else engine
    with stand_in_server(tmp_path, engine_url) as server:
        replicas = start_replicas(tmp_path, server.url, 3)
        try:
            targets = [r.target for r in replicas]
            run_ids = create_runs(targets[0], 2)
            tally = write(targets, run_ids, writers=12, appends_each=40)
            assert not tally.failures, tally.failures[:5]
            assert len(tally.acknowledged) == 12 * 40
            assert check_stored(targets[1], run_ids, tally) == []
            assert tally.refused <= 0.01 * tally.attempts, (tally.refused, tally.attempts)
        finally:
            stop_replicas(replicas)
