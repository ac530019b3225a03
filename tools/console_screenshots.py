"""Take the README's console screenshots: a daemon with sample data, Debian's chromium, two pages.

    .venv/bin/python tools/console_screenshots.py            # writes docs/images/console-*.png

Starts an in-memory daemon with --http-listen, writes a few agents' runs,
events and releases through gRPC (one run left RUNNING), and saves the runs
list and a run page (one event opened) at a fixed window size. Needs
`chromium` on PATH (make install) and the dev extras (playwright).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aivcs.ledger.v1 import release_registry_pb2, run_ledger_pb2  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from harness.browser import CHROMIUM_ARGS  # noqa: E402
from harness.httpd import HttpDaemon, Stubs, append, create, start_http_daemon  # noqa: E402

SPECS = ["3f" * 32, "9c" * 32, "e1" * 32]
AGENTS = ["support-triage", "code-reviewer", "release-notes"]


def sample_data(stubs: Stubs) -> str:
    """Runs of three agents, finished in each way, and one RUNNING run with a conversation; returns its id."""
    for index in range(9):
        agent = AGENTS[index % 3]
        run_id = create(stubs, agent, SPECS[index % 3], git_sha=f"{0xA1B2C3 + index * 7919:07x}")
        append(stubs, run_id, ("plan", {"goal": f"task {index}"}), ("tool_call", {"tool": "search", "query": "x"}))
        if index % 3 == 0:
            stubs.runs.CompleteRun(run_ledger_pb2.CompleteRunRequest(run_id=run_id, duration_ms=1200 + index))
        elif index % 3 == 1:
            stubs.runs.FailRun(run_ledger_pb2.FailRunRequest(run_id=run_id, duration_ms=800, reason="tool timed out"))
    for spec, who in ((SPECS[0], "alice"), (SPECS[1], "ci-bot")):
        promote = release_registry_pb2.PromoteRequest(agent_name=AGENTS[0], spec_digest=spec, promoted_by=who)
        stubs.releases.Promote(promote)
    run_id = create(stubs, AGENTS[0], SPECS[1], git_sha="5e7a9d1")
    append(
        stubs,
        run_id,
        ("plan", {"goal": "answer ticket #4812", "steps": ["read ticket", "search docs", "draft reply"]}),
        ("tool_call", {"tool": "search_docs", "arguments": {"query": "reset two-factor", "top_k": 5}}),
        ("tool_result", {"tool": "search_docs", "hits": [{"title": "Reset 2FA", "score": 0.92}]}),
        ("message", {"role": "assistant", "text": "You can reset two-factor from Settings → Security."}),
        ("eval", {"rubric": "helpfulness", "score": 0.88, "passed": True}),
    )
    return run_id


def shoot(served: HttpDaemon, run_id: str, out: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium is not on PATH: run make install")
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 760})
        page.goto(served.base + "/")
        page.locator(f'tr[data-run-id="{run_id}"]').wait_for()
        page.screenshot(path=str(out / "console-runs.png"))
        page.goto(served.base + f"/#/runs/{run_id}")
        page.locator('#events li[data-seq="5"]').wait_for()
        page.locator('#events li[data-seq="2"] summary').click()
        page.locator("#live").filter(has_text="live").wait_for()
        page.screenshot(path=str(out / "console-run.png"), full_page=True)
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        served = start_http_daemon(Path(tmp))
        try:
            with served.daemon.channel() as channel:
                run_id = sample_data(Stubs(channel))
            shoot(served, run_id, args.out)
        finally:
            served.daemon.stop()
    print(f"wrote {args.out / 'console-runs.png'} and {args.out / 'console-run.png'}")


if __name__ == "__main__":
    main()
