"""Hostile input at length: every property of tests/test_hostile.py with `examples` examples (harness/hostile.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.reliability import say
from harness.hostile import campaign


def run(folder: Path, examples: int) -> tuple[dict[str, Any], bool]:
    """The campaign's figures and whether every property held with the daemon up; printed at the end."""
    say(f"hostile input: {examples} examples per property")
    hostile = campaign(folder, examples)
    say(f"  hostile inputs tried   {hostile['inputs_tried']}")
    say(f"  failed properties      {hostile['failed_properties']}")
    say(f"  daemon crashes         {hostile['daemon_crashes']}")
    say(f"  unexpected errors logged by the daemon: {hostile['unexpected_errors_logged']}")
    say(f"  answers                {hostile['answers']}")
    for message in hostile["messages"]:
        say("   ", message)
    return hostile, hostile["failed_properties"] == 0 and hostile["daemon_crashes"] == 0
