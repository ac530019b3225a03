"""The adapter examples in clients/python/examples run as written, offline, against the daemon."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.daemon import DaemonProcess
from tests.client.conftest import cli_env

EXAMPLES = Path(__file__).resolve().parents[2] / "clients" / "python" / "examples"


@pytest.mark.parametrize(
    ("script", "needs", "expected"),
    [
        ("langgraph_agent.py", "langgraph", ["answer: Take an umbrella.", "completed, 6 events", "llm_end"]),
        ("openai_agent.py", "agents", ["answer: Take an umbrella.", "weather-bot completed", "generation", "function"]),
    ],
)
def test_example_runs(daemon: DaemonProcess, script: str, needs: str, expected: list[str]) -> None:
    pytest.importorskip(needs)
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env({"AIVCS_LEDGER_TARGET": daemon.target}),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for text in expected:
        assert text in done.stdout, done.stdout
