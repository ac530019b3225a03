"""The web console in a real Chromium (Debian's package, driven by Playwright), against the real daemon.

Runs, events and releases are written through gRPC and seen on the pages;
promote and rollback are done from the page and checked through gRPC. Every
page is watched for JavaScript errors (uncaught exceptions and console
errors), and a test fails on any.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aivcs.ledger.v1 import release_registry_pb2

from harness.browser import CHROMIUM, CHROMIUM_ARGS
from harness.httpd import SPEC_A, SPEC_B, HttpDaemon, Stubs, append, create, start_http_daemon

playwright_sync = pytest.importorskip("playwright.sync_api")

if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed (make install installs it)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert CHROMIUM is not None, "chromium is missing: run make install"
    with playwright_sync.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh tab; the test fails if any page it opened threw or logged an error."""
    context = browser.new_context()
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))
    tab.on("console", lambda message: errors.append(f"console: {message.text}") if message.type == "error" else None)
    tab.set_default_timeout(10_000)
    yield tab
    context.close()
    assert errors == []


def test_list_shows_a_run_created_through_grpc(served: HttpDaemon, stubs: Stubs, page: Any) -> None:
    run_id = create(stubs, "console-lister", git_sha="feedbeef")
    page.goto(served.base + "/")
    row = page.locator(f'tr[data-run-id="{run_id}"]')
    row.wait_for()
    assert "console-lister" in row.inner_text() and "RUNNING" in row.inner_text() and "feedbeef" in row.inner_text()
    page.fill("input[name=agent_name]", "console-lister")
    page.click("#run-filters button[type=submit]")
    page.wait_for_url("**agent_name=console-lister**")
    page.locator(f'tr[data-run-id="{run_id}"]').wait_for()
    assert page.locator("#runs tbody tr").count() == 1
    page.select_option("select[name=status]", "RUN_STATUS_COMPLETED")
    page.click("#run-filters button[type=submit]")
    page.locator("#runs tbody td.muted").wait_for()  # "No runs match."
    assert page.locator(f'tr[data-run-id="{run_id}"]').count() == 0


def test_list_pages(served: HttpDaemon, stubs: Stubs, page: Any) -> None:
    made = [create(stubs, "console-pager") for _ in range(52)]  # more than one page of 50
    page.goto(served.base + "/#/runs?agent_name=console-pager")
    page.locator(f'tr[data-run-id="{made[-1]}"]').wait_for()  # newest first
    assert page.locator("#runs tbody tr").count() == 50
    page.click("#runs-next")
    page.locator(f'tr[data-run-id="{made[0]}"]').wait_for()
    assert page.locator("#runs tbody tr").count() == 2


def test_run_page_shows_events_verifies_and_follows_live(served: HttpDaemon, stubs: Stubs, page: Any) -> None:
    run_id = create(stubs, "console-follower")
    append(stubs, run_id, ("plan", {"goal": "ship"}), ("tool", {"name": "grep", "args": ["-r", "x"]}))
    page.goto(served.base + f"/#/runs/{run_id}")
    page.locator('#events li[data-seq="2"]').wait_for()
    assert page.locator("#events li[data-seq]").count() == 2
    page.locator('#events li[data-seq="2"] summary').click()
    payload = page.locator('#events li[data-seq="2"] pre.payload').inner_text()
    assert '"name": "grep"' in payload  # pretty-printed
    page.locator("#live").filter(has_text="live").wait_for()
    append(stubs, run_id, ("answer", {"text": "done"}))
    began = time.monotonic()
    page.locator('#events li[data-seq="3"]').wait_for(timeout=5_000)
    assert time.monotonic() - began < 1.0  # on the open page within a second of the append's answer
    assert page.locator("#total-events").inner_text() == "3"
    page.click("#verify")
    page.locator("#verdict.ok").wait_for()
    assert "3 events verified" in page.locator("#verdict").inner_text()


def test_large_payload_is_truncated_with_a_way_to_expand(served: HttpDaemon, stubs: Stubs, page: Any) -> None:
    run_id = create(stubs, "console-large")
    append(stubs, run_id, ("blob", {"text": "x" * 20_000}))
    page.goto(served.base + f"/#/runs/{run_id}")
    page.locator('#events li[data-seq="1"] summary').click()
    shown = page.locator('#events li[data-seq="1"] pre.payload')
    assert len(shown.inner_text()) < 5_000
    page.locator('#events li[data-seq="1"] button.expand').click()
    assert "x" * 20_000 in shown.inner_text()


def test_a_script_payload_renders_as_text_and_never_runs(served: HttpDaemon, stubs: Stubs, page: Any) -> None:
    hostile = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
    run_id = create(stubs, "console-<b>bold</b>")
    append(stubs, run_id, ("<script>kind</script>", {"html": hostile}))
    page.goto(served.base + f"/#/runs/{run_id}")
    page.locator('#events li[data-seq="1"] summary').click()
    assert json.dumps(hostile) in page.locator('#events li[data-seq="1"] pre.payload').inner_text()
    assert "console-<b>bold</b>" in page.locator("#run-meta").inner_text()
    page.goto(served.base + "/#/runs?agent_name=console-%3Cb%3Ebold%3C%2Fb%3E")
    page.locator(f'tr[data-run-id="{run_id}"]').wait_for()
    assert page.evaluate("window.__pwned") is None
    assert page.locator("script").count() == 1  # app.js only
    assert page.locator("img, b").count() == 0


def test_promote_and_rollback_from_the_page_change_the_history(served: HttpDaemon, stubs: Stubs, page: Any) -> None:
    agent = "console-releaser"
    page.goto(served.base + f"/#/agents/{agent}?spec={SPEC_A}")
    page.locator("#current-release").filter(has_text="No release yet").wait_for()
    page.fill("#promote-form input[name=promoted_by]", "alice")
    page.fill("#promote-form input[name=version_label]", "v1")
    page.click("#promote-form button[type=submit]")
    page.locator('#history tr[data-sequence="1"]').wait_for()
    page.fill("#promote-form input[name=spec_digest]", SPEC_B)
    page.fill("#promote-form input[name=promoted_by]", "alice")
    page.click("#promote-form button[type=submit]")
    page.locator('#history tr[data-sequence="2"]').wait_for()
    assert SPEC_B in page.locator("#current-release").inner_text()
    page.fill("#rollback-form input[name=promoted_by]", "bob")
    page.click("#rollback-form button[type=submit]")
    page.locator('#history tr[data-sequence="3"]').wait_for()
    assert SPEC_A in page.locator("#current-release").inner_text()
    history = stubs.releases.GetHistory(release_registry_pb2.GetHistoryRequest(agent_name=agent), timeout=10)
    assert [(r.sequence, r.spec_digest, r.promoted_by) for r in history.releases] == [
        (3, SPEC_A, "bob"),
        (2, SPEC_B, "alice"),
        (1, SPEC_A, "alice"),
    ]
    assert history.releases[0].rollback_of == 1


def test_tokens_asked_kept_for_the_tab_and_roles_enforced(tmp_path: Path, browser: Any) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("read-write rw-console\nread-only ro-console\n")
    served = start_http_daemon(tmp_path, ["--auth-token-file", str(tokens)])
    context = browser.new_context()
    try:
        tab = context.new_page()
        tab.set_default_timeout(10_000)
        errors: list[str] = []
        tab.on("pageerror", lambda error: errors.append(str(error)))
        # The browser logs each 401/403 answer as a console error; only uncaught exceptions count here.
        tab.goto(served.base + "/")
        tab.locator("#token-panel").wait_for()
        tab.fill("#token-input", "ro-console")
        tab.click("#token-form button[type=submit]")
        tab.locator("#runs tbody td.muted").wait_for()  # the list loaded
        assert tab.evaluate("sessionStorage.getItem('aivcs-ledgerd-token')") == "ro-console"
        tab.goto(served.base + f"/#/agents/console-tokens?spec={SPEC_A}")
        tab.fill("#promote-form input[name=promoted_by]", "mallory")
        tab.click("#promote-form button[type=submit]")
        tab.locator("#alert").filter(has_text="403").wait_for()
        tab.click("#token-button")
        tab.fill("#token-input", "rw-console")
        # A new token renders the page again; fill the form of the new page, not the one it replaces.
        tab.evaluate("document.getElementById('promote-form').dataset.stale = '1'")
        tab.click("#token-form button[type=submit]")
        tab.locator("#promote-form:not([data-stale])").wait_for()
        tab.fill("#promote-form input[name=promoted_by]", "alice")
        tab.click("#promote-form button[type=submit]")
        tab.locator('#history tr[data-sequence="1"]').wait_for()
        assert errors == []
    finally:
        context.close()
        assert served.daemon.stop() == 0, served.daemon.log()
