"""Values every test and benchmark needs: valid spec digests, unique ids, a fresh run."""

from __future__ import annotations

import hashlib
import uuid

from aivcs.ledger.v1 import run_ledger_pb2 as rl
from aivcs.ledger.v1.run_ledger_pb2_grpc import RunLedgerStub


def digest(text: str = "") -> str:
    """A valid spec digest (64 hex characters): the same for the same text, a fresh one for none."""
    return hashlib.sha256((text or uuid.uuid4().hex).encode()).hexdigest()


def unique(prefix: str = "run") -> str:
    """`prefix` and a random suffix: run ids and agent names that no other test uses."""
    return f"{prefix}-{uuid.uuid4()}"


SPEC = digest("spec")


def new_run(runs: RunLedgerStub, prefix: str = "run", *, agent: str = "tests", spec: str = SPEC) -> str:
    """Create a RUNNING run with a fresh id starting with `prefix`; its id."""
    run_id = unique(prefix)
    runs.CreateRun(rl.CreateRunRequest(spec_digest=spec, agent_name=agent, run_id=run_id), timeout=30)
    return run_id
