"""Values every test and benchmark needs: valid spec digests, unique ids, a fresh run (by call or as a record)."""

from __future__ import annotations

import hashlib
import time
import uuid

from aivcs.ledger.v1 import run_ledger_pb2 as rl
from aivcs.ledger.v1.run_ledger_pb2_grpc import RunLedgerStub

from aivcs_ledgerd.ledger.runs import fresh_run
from aivcs_ledgerd.model import Run


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


def run_record(run_id: str, *, agent: str = "tests", spec: str = SPEC) -> Run:
    """A RUNNING run, created now, as CreateRun stores it: for tests and benchmarks that write the store directly."""
    return fresh_run(run_id, spec, agent, time.time_ns())
