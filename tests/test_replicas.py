"""Several daemon replicas on one SurrealDB server (the stand-in, tests/surrealdb_stand_in.py) act as one ledger."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.daemon import assert_serving
from tests.replicas import start_replicas, stop_replicas
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
