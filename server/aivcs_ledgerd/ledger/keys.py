"""The keys a replica holds ownership by: one per run, one per agent's release history.

The ways in route a call to the replica that owns its key (transport/peers.py);
they name keys through here, so they need not know how the store spells them.
"""

from __future__ import annotations

from aivcs_ledgerd.store.releases import lock_key
from aivcs_ledgerd.store.runs import run_key


def of_run(run_id: str) -> str:
    """The ownership key of a run: its events, heartbeats and finish."""
    return run_key(run_id)


def of_agent(agent_name: str) -> str:
    """The ownership key of an agent's release history: promotions and rollbacks."""
    return lock_key(agent_name)
