"""The HTTP/JSON API against the real daemon: routes, proto3 JSON, codes, paging, filters, escaping,
tokens, cross-origin writes, the live feed, TLS and the exclusive port.

Runs and events are written through gRPC and read over HTTP (and the other
way round for releases), so both transports are seen to share one ledger.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import ssl
import subprocess
import sys
import time
import urllib.error
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from aivcs.ledger.v1 import (
    release_registry_pb2,
    run_ledger_pb2,
)

from harness.daemon import free_port, run_to_exit, start_daemon
from harness.httpd import HTTP_LINE, SPEC_A, SPEC_B, SPEC_C, HttpDaemon, Stubs, append, call, create, start_http_daemon
from harness.inprocess import running
from harness.pki import Pki, tls_settings


def refused(answer: Any, http_status: int, code: str, *words: str) -> None:
    assert answer.status == http_status, (answer.status, answer.body)
    assert answer.body["status"] == code, answer.body
    for word in words:
        assert word in answer.body["message"], answer.body


def test_runs_list_pages_newest_first_and_filters(served: HttpDaemon, stubs: Stubs) -> None:
    made = [create(stubs, "http-lister", SPEC_A if i % 2 else SPEC_B, git_sha=f"sha{i}") for i in range(5)]
    stubs.runs.CompleteRun(run_ledger_pb2.CompleteRunRequest(run_id=made[0], duration_ms=5), timeout=10)
    seen: list[str] = []
    token = ""
    while True:
        page = call(served.base, f"/v1/runs?agent_name=http-lister&page_size=2&page_token={token}")
        assert page.status == 200, page.body
        assert len(page.body["runs"]) <= 2
        seen += [run["runId"] for run in page.body["runs"]]
        token = page.body["nextPageToken"]
        if not token:
            break
    assert seen == made[::-1]  # newest first, every run once
    completed = call(served.base, "/v1/runs?agentName=http-lister&status=RUN_STATUS_COMPLETED").body["runs"]
    assert [run["runId"] for run in completed] == [made[0]]
    assert completed[0]["status"] == "RUN_STATUS_COMPLETED" and completed[0]["success"] is True
    by_spec = call(served.base, f"/v1/runs?agent_name=http-lister&spec_digest={SPEC_A}").body["runs"]
    assert sorted(run["runId"] for run in by_spec) == sorted(made[1::2])
    by_sha = call(served.base, "/v1/runs?agent_name=http-lister&git_sha=sha3").body["runs"]
    assert [run["runId"] for run in by_sha] == [made[3]]
    third = call(served.base, f"/v1/runs/{made[2]}").body["run"]
    after = call(served.base, f"/v1/runs?agent_name=http-lister&created_after={third['createdAt']}").body["runs"]
    assert [run["runId"] for run in after] == [made[4], made[3], made[2]]  # at or after
    window = f"created_after={third['createdAt']}&created_before={after[0]['createdAt']}"
    between = call(served.base, f"/v1/runs?agent_name=http-lister&{window}").body["runs"]
    assert [run["runId"] for run in between] == [made[3], made[2]]  # strictly before


def test_run_is_proto3_json_with_every_field(served: HttpDaemon, stubs: Stubs) -> None:
    run_id = create(stubs, "http-getter")
    answer = call(served.base, f"/v1/runs/{run_id}")
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("application/json")
    run = answer.body["run"]
    assert run["runId"] == run_id and run["agentName"] == "http-getter" and run["specDigest"] == SPEC_A
    assert run["status"] == "RUN_STATUS_RUNNING"
    assert run["totalEvents"] == "0"  # uint64 is a string in proto3 JSON, and defaults are printed


def test_refusals_are_json_with_the_grpc_codes_http_status(served: HttpDaemon, stubs: Stubs) -> None:
    refused(call(served.base, "/v1/runs/no-such-run"), 404, "NOT_FOUND", "no-such-run")
    refused(call(served.base, "/v1/runs?status=SOMETIMES"), 400, "INVALID_ARGUMENT", "status")
    refused(call(served.base, "/v1/runs?colour=red"), 400, "INVALID_ARGUMENT", "colour")
    refused(call(served.base, "/v1/runs?spec_digest=short"), 400, "INVALID_ARGUMENT", "spec_digest")
    refused(call(served.base, "/v1/runs?page_token=garbage"), 400, "INVALID_ARGUMENT", "page_token")
    refused(call(served.base, "/v1/runs?page_size=many"), 400, "INVALID_ARGUMENT", "page_size")
    refused(call(served.base, "/v1/nothing-here"), 404, "NOT_FOUND", "/v1/nothing-here")
    refused(call(served.base, "/v1/runs", method="PUT", body={}), 405, "UNIMPLEMENTED", "PUT")
    run_id = create(stubs, "http-refused")
    refused(call(served.base, f"/v1/runs/{run_id}/events?from_seq=5&to_seq=2"), 400, "INVALID_ARGUMENT", "to_seq")
    refused(call(served.base, f"/v1/runs/{run_id}/events?limit=1001"), 400, "INVALID_ARGUMENT", "limit")
    refused(call(served.base, "/v1/runs/no-such-run/events"), 404, "NOT_FOUND")
    refused(call(served.base, "/v1/runs/no-such-run:verify"), 404, "NOT_FOUND")


def test_refusals_carry_the_grpc_error_details_as_google_rpc_status_json(served: HttpDaemon, stubs: Stubs) -> None:
    error_info = "type.googleapis.com/google.rpc.ErrorInfo"
    missing = call(served.base, "/v1/runs/no-such-run")
    refused(missing, 404, "NOT_FOUND")
    assert missing.body["details"] == [
        {
            "@type": error_info,
            "reason": "ERROR_REASON_RUN_NOT_FOUND",
            "domain": "ledger.aivcs.dev",
            "metadata": {"run_id": "no-such-run"},
        }
    ]
    path = "/v1/agents/http-details/releases"
    first = call(served.base, path + ":promote", method="POST", body={"specDigest": SPEC_A, "promotedBy": "ci"})
    assert first.status == 200, first.body
    body = {"spec_digest": SPEC_C, "promoted_by": "ci", "expected_current_spec_digest": SPEC_B}
    stale = call(served.base, path + ":promote", method="POST", body=body)
    refused(stale, 409, "ABORTED")
    [info] = [detail for detail in stale.body["details"] if detail["@type"] == error_info]
    assert info["reason"] == "ERROR_REASON_CURRENT_RELEASE_MISMATCH"
    assert info["metadata"] == {"agent_name": "http-details", "current_spec_digest": SPEC_A}
    bad = call(served.base, "/v1/runs?spec_digest=short")
    refused(bad, 400, "INVALID_ARGUMENT")
    types = {detail["@type"] for detail in bad.body["details"]}
    assert types == {error_info, "type.googleapis.com/google.rpc.BadRequest"}, bad.body
    assert "details" not in call(served.base, "/v1/nothing-here").body  # no reason, no details


def test_events_by_seq_range_kinds_and_limit(served: HttpDaemon, stubs: Stubs) -> None:
    run_id = create(stubs, "http-reader")
    append(stubs, run_id, *[("step" if i % 3 else "tool", {"i": i}) for i in range(1, 11)])
    events = call(served.base, f"/v1/runs/{run_id}/events?from_seq=3&to_seq=7").body["events"]
    assert [event["seq"] for event in events] == ["3", "4", "5", "6", "7"]
    assert events[0]["payload"] == {"i": 3} and events[0]["runId"] == run_id and len(events[0]["digest"]) == 64
    tools = call(served.base, f"/v1/runs/{run_id}/events?kinds=tool").body["events"]
    assert [event["seq"] for event in tools] == ["3", "6", "9"]
    both = call(served.base, f"/v1/runs/{run_id}/events?kinds=tool&kinds=step&limit=4").body["events"]
    assert [event["seq"] for event in both] == ["1", "2", "3", "4"]
    rest = call(served.base, f"/v1/runs/{run_id}/events?from_seq=5&limit=4").body["events"]
    assert [event["seq"] for event in rest] == ["5", "6", "7", "8"]
    verdict = call(served.base, f"/v1/runs/{run_id}:verify").body
    assert verdict["ok"] is True and verdict["verifiedEvents"] == "10", verdict


def test_payloads_come_back_as_data_never_as_markup(served: HttpDaemon, stubs: Stubs) -> None:
    hostile = {"html": "<script>alert(1)</script>", "quote": "\"'</pre>", "nested": {"<b>": ["<img src=x onerror=1>"]}}
    run_id = create(stubs, "<script>agent</script>")
    append(stubs, run_id, ("hostile", hostile))
    answer = call(served.base, f"/v1/runs/{run_id}/events")
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert "script-src 'self'" in answer.headers["Content-Security-Policy"]
    assert answer.body["events"][0]["payload"] == hostile
    listed = call(served.base, "/v1/runs?agent_name=%3Cscript%3Eagent%3C/script%3E").body["runs"]
    assert [run["runId"] for run in listed] == [run_id]


def test_promote_and_rollback_over_http_are_the_grpc_ones(served: HttpDaemon, stubs: Stubs) -> None:
    path = "/v1/agents/http-releaser/releases"
    refused(call(served.base, path + ":current"), 404, "NOT_FOUND")
    first = call(served.base, path + ":promote", method="POST", body={"specDigest": SPEC_A, "promotedBy": "ci"})
    assert first.status == 200, first.body
    assert first.body["release"]["sequence"] == "1"
    second = call(
        served.base,
        path + ":promote",
        method="POST",
        body={
            "spec_digest": SPEC_B,
            "promoted_by": "ci",
            "version_label": "v2",
            "expected_current_spec_digest": SPEC_A,
        },
    )
    assert second.status == 200, second.body
    current = stubs.releases.GetCurrent(release_registry_pb2.GetCurrentRequest(agent_name="http-releaser"))
    assert current.release.spec_digest == SPEC_B and current.release.version_label == "v2"
    stale = call(
        served.base,
        path + ":promote",
        method="POST",
        body={"spec_digest": SPEC_C, "promoted_by": "ci", "expected_current_spec_digest": SPEC_A},
    )
    refused(stale, 409, "ABORTED")
    back = call(served.base, path + ":rollback", method="POST", body={"promoted_by": "oncall"})
    assert back.status == 200, back.body
    assert back.body["release"]["specDigest"] == SPEC_A and back.body["release"]["rollbackOf"] == "1"
    history = call(served.base, path + "?page_size=2").body
    assert [r["sequence"] for r in history["releases"]] == ["3", "2"] and history["nextPageToken"]
    older = call(served.base, path + f"?page_size=2&page_token={history['nextPageToken']}").body
    assert [r["sequence"] for r in older["releases"]] == ["1"]
    assert call(served.base, path + ":current").body["release"]["sequence"] == "3"
    lone = "/v1/agents/http-lone/releases"
    body = {"spec_digest": SPEC_A, "promoted_by": "ci"}
    assert call(served.base, lone + ":promote", method="POST", body=body).status == 200
    refused(call(served.base, lone + ":rollback", method="POST", body={"promoted_by": "x"}), 412, "FAILED_PRECONDITION")
    refused(
        call(served.base, path + ":promote", method="POST", body={"spec_digest": "nope", "promoted_by": "ci"}),
        400,
        "INVALID_ARGUMENT",
        "spec_digest",
    )
    refused(
        call(
            served.base,
            path + ":promote",
            method="POST",
            body={"agent_name": "other", "spec_digest": SPEC_A, "promoted_by": "ci"},
        ),
        400,
        "INVALID_ARGUMENT",
        "agent_name",
    )
    refused(
        call(
            served.base,
            path + ":promote",
            method="POST",
            raw=b"{not json",
            headers={"Content-Type": "application/json"},
        ),
        400,
        "INVALID_ARGUMENT",
        "body",
    )


def test_writes_from_another_origin_are_refused_and_change_nothing(served: HttpDaemon) -> None:
    path = "/v1/agents/http-csrf/releases"
    promote = {"spec_digest": SPEC_A, "promoted_by": "attacker"}
    form = call(
        served.base,
        path + ":promote",
        method="POST",
        raw=b"spec_digest=" + SPEC_A.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    refused(form, 400, "INVALID_ARGUMENT", "Content-Type: application/json")
    plain = call(
        served.base,
        path + ":promote",
        method="POST",
        raw=json.dumps(promote).encode(),
        headers={"Content-Type": "text/plain"},
    )
    refused(plain, 400, "INVALID_ARGUMENT")
    foreign = call(
        served.base, path + ":promote", method="POST", body=promote, headers={"Origin": "http://evil.example"}
    )
    refused(foreign, 403, "PERMISSION_DENIED", "evil.example")
    other_port = call(
        served.base,
        path + ":promote",
        method="POST",
        body=promote,
        headers={"Origin": f"http://127.0.0.1:{served.port + 1}"},
    )
    refused(other_port, 403, "PERMISSION_DENIED")
    cross_site = call(
        served.base, path + ":promote", method="POST", body=promote, headers={"Sec-Fetch-Site": "cross-site"}
    )
    refused(cross_site, 403, "PERMISSION_DENIED")
    refused(call(served.base, path + ":current"), 404, "NOT_FOUND")  # none of them promoted
    own = call(served.base, path + ":promote", method="POST", body=promote, headers={"Origin": served.base})
    assert own.status == 200, own.body
    assert "Access-Control-Allow-Origin" not in own.headers


def sse_messages(
    served: HttpDaemon,
    path: str,
    count: int,
    headers: dict[str, str] | None = None,
) -> Iterator[tuple[str, str | None, Any]]:
    """(event, id, data) of the stream at `path`, `count` messages at most."""
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        assert response.status == 200, response.read()
        assert response.getheader("Content-Type") == "text/event-stream"
        event, event_id, data = "message", None, None
        while count:
            raw = response.readline()
            if not raw:
                return  # the server ended the stream
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "" and data is not None:
                yield event, event_id, data
                count -= 1
                event, event_id, data = "message", None, None
    finally:
        connection.close()


def test_live_feed_sends_stored_then_new_events_then_the_end(served: HttpDaemon, stubs: Stubs) -> None:
    run_id = create(stubs, "http-follower")
    append(stubs, run_id, ("a", {"n": 1}), ("b", {"n": 2}))
    feed = sse_messages(served, f"/v1/runs/{run_id}/events:subscribe", 4)
    seqs: list[str] = []
    while seqs != ["1", "2"]:  # stored ones, in one message or more; each message's id is its last seq
        event, event_id, data = next(feed)
        assert event == "events" and event_id == data["events"][-1]["seq"], (event, event_id, data)
        seqs += [e["seq"] for e in data["events"]]
        assert len(seqs) <= 2, seqs
    append(stubs, run_id, ("c", {"n": 3}))
    event, event_id, data = next(feed)
    assert (event, event_id, data["events"][0]["payload"]) == ("events", "3", {"n": 3})
    stubs.runs.CompleteRun(run_ledger_pb2.CompleteRunRequest(run_id=run_id, duration_ms=1), timeout=10)
    event, _, data = next(feed)
    assert event == "end" and data["run"]["status"] == "RUN_STATUS_COMPLETED" and data["run"]["totalEvents"] == "3"
    resumed = list(sse_messages(served, f"/v1/runs/{run_id}/events:subscribe", 2, {"Last-Event-ID": "2"}))
    assert [e["seq"] for e in resumed[0][2]["events"]] == ["3"] and resumed[1][0] == "end"
    refused(call(served.base, "/v1/runs/no-such-run/events:subscribe"), 404, "NOT_FOUND")


def test_console_files_are_served_with_a_strict_policy(served: HttpDaemon) -> None:
    page = call(served.base, "/")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert b"/console/app.js" in page.body and b"http://" not in page.body and b"https://" not in page.body
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "unsafe" not in policy
    script = call(served.base, "/console/app.js")
    assert script.status == 200 and b"innerHTML" not in script.body and b"textContent" in script.body
    assert call(served.base, "/console/../../cli.py").status == 404


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text("read-write rw-secret\nread-only ro-secret\n")
    return path


def test_tokens_and_roles_are_the_grpc_ones(tmp_path: Path, token_file: Path) -> None:
    served = start_http_daemon(tmp_path, ["--auth-token-file", str(token_file)])
    try:
        missing = call(served.base, "/v1/runs")
        refused(missing, 401, "UNAUTHENTICATED", "bearer token")
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        refused(call(served.base, "/v1/runs", headers={"Authorization": "Bearer wrong"}), 401, "UNAUTHENTICATED")
        refused(call(served.base, "/v1/runs/x/events:subscribe"), 401, "UNAUTHENTICATED")
        reader = {"Authorization": "Bearer ro-secret"}
        writer = {"Authorization": "Bearer rw-secret"}
        assert call(served.base, "/v1/runs", headers=reader).status == 200
        body = {"spec_digest": SPEC_A, "promoted_by": "ci"}
        path = "/v1/agents/http-tokens/releases:promote"
        refused(call(served.base, path, method="POST", body=body, headers=reader), 403, "PERMISSION_DENIED")
        refused(call(served.base, path, method="POST", body=body), 401, "UNAUTHENTICATED")
        assert call(served.base, path, method="POST", body=body, headers=writer).status == 200
        assert call(served.base, "/").status == 200  # the console's files hold no data; it asks for a token
    finally:
        assert served.daemon.stop() == 0, served.daemon.log()


async def test_tls_settings_apply_to_the_http_port(pki: Pki) -> None:
    """With --tls-cert the HTTP port speaks only HTTPS; with --tls-client-ca it wants a client certificate."""
    async with running(http_listen="127.0.0.1:0", **tls_settings(pki, mutual=True)) as daemon:
        assert daemon.http is not None and daemon.http.scheme == "https"
        base = f"https://localhost:{daemon.http.port}"
        context = ssl.create_default_context(cadata=pki.ca.cert.decode())
        context.load_cert_chain(pki.write("client.pem", pki.client.cert), pki.write("client.key", pki.client.key))
        answer = await asyncio.to_thread(call, base, "/v1/runs", context=context)
        assert answer.status == 200 and answer.body == {"runs": [], "nextPageToken": ""}
        anonymous = ssl.create_default_context(cadata=pki.ca.cert.decode())
        with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
            await asyncio.to_thread(call, base, "/v1/runs", context=anonymous)
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine)):
            await asyncio.to_thread(call, f"http://127.0.0.1:{daemon.http.port}", "/v1/runs")


def test_a_second_daemon_on_a_taken_http_port_exits_naming_the_flag(served: HttpDaemon, tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "aivcs_ledgerd",
        "--db",
        "mem://",
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        f"127.0.0.1:{served.port}",
    ]
    began = time.monotonic()
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert f"--http-listen 127.0.0.1:{served.port}" in done.stderr and "in use" in done.stderr, done.stderr
    assert time.monotonic() - began < 60
    assert call(served.base, "/v1/runs").status == 200  # the first one still serves


def test_sigterm_ends_open_live_feeds_and_the_daemon_exits(tmp_path: Path) -> None:
    served = start_http_daemon(tmp_path, ["--grace-period", "20"])
    with served.daemon.channel() as channel:
        stubs = Stubs(channel)
        run_id = create(stubs, "http-drain")
        append(stubs, run_id, ("a", {}))
    feed = sse_messages(served, f"/v1/runs/{run_id}/events:subscribe", 2)
    assert next(feed)[0] == "events"
    began = time.monotonic()
    served.daemon.process.terminate()
    event, _, data = next(feed)
    assert event == "error" and data["status"] == "UNAVAILABLE", data  # the client is told to come back
    assert served.daemon.process.wait(timeout=30) == 0, served.daemon.log()
    assert time.monotonic() - began < 15  # the open feed did not hold shutdown for the grace period


def test_the_wheel_ships_the_console(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parent.parent
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(repo),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("aivcs_ledgerd-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("index.html", "app.js", "app.css", "favicon.svg"):
        assert f"aivcs_ledgerd/http/static/{name}" in names, sorted(names)


def test_http_listen_from_the_environment_and_bad_addresses(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, env={"AIVCS_LEDGER_HTTP_LISTEN": "127.0.0.1:0"})
    try:
        match = HTTP_LINE.search(daemon.log())
        assert match, daemon.log()
        assert call(f"http://127.0.0.1:{match.group(2)}", "/v1/runs").status == 200
    finally:
        assert daemon.stop() == 0, daemon.log()
    for bad in ("127.0.0.1:99999", "no-port", "unix:/tmp/aivcs.sock"):
        done = run_to_exit(["--db", "mem://", "--http-listen", bad], tmp_path)
        assert done.returncode == 2 and "--http-listen" in done.stderr, (bad, done.stderr)


def test_every_grpc_code_has_its_http_status() -> None:
    from aivcs_ledgerd.http.errors import HTTP_STATUS

    assert set(HTTP_STATUS) == set(grpc.StatusCode)  # no code falls through to a generic 500 by omission
    assert HTTP_STATUS[grpc.StatusCode.UNAVAILABLE] == 503 and HTTP_STATUS[grpc.StatusCode.RESOURCE_EXHAUSTED] == 429


def _http_counts(metrics_port: int) -> dict[tuple[str, ...], float]:
    """http_server_request_duration_seconds_count by (method, route, status), scraped from the metrics port."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    counts = {}
    for line in text.splitlines():
        if line.startswith("http_server_request_duration_seconds_count{"):
            labels_text, _, value = line.rpartition("} ")
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels_text))
            names = ("http_request_method", "http_route", "http_response_status_code")
            counts[tuple(labels[name] for name in names)] = float(value)
    return counts


def test_http_calls_are_counted_by_route_and_logged_like_grpc_ones(tmp_path: Path, token_file: Path) -> None:
    metrics_port = free_port()
    served = start_http_daemon(
        tmp_path, ["--auth-token-file", str(token_file), "--metrics-listen", f"127.0.0.1:{metrics_port}"]
    )
    writer = {"Authorization": "Bearer rw-secret"}
    try:
        promote = "/v1/agents/http-observed/releases:promote"
        body = {"spec_digest": SPEC_A, "promoted_by": "ci"}
        assert call(served.base, promote, method="POST", body=body, headers=writer).status == 200
        refused(call(served.base, promote, method="POST", body=body), 401, "UNAUTHENTICATED")
        for _ in range(2):  # a read the caller got wrong: counted, not logged
            refused(call(served.base, "/v1/runs/no-such-run", headers=writer), 404, "NOT_FOUND")
        refused(call(served.base, "/v1/runs/<script>x</script>/nowhere", headers=writer), 404, "NOT_FOUND")
        counts = _http_counts(metrics_port)
        log = served.daemon.log()
    finally:
        assert served.daemon.stop() == 0, served.daemon.log()
    route = "/v1/agents/{agent_name}/releases:promote"
    assert counts[("POST", route, "200")] == 1
    assert counts[("POST", route, "401")] == 1
    assert counts[("GET", "/v1/runs/{run_id}", "404")] == 2
    assert counts[("GET", "unmatched", "404")] == 1  # a path no route serves is one label, not its text
    assert not any("<script>" in key[1] for key in counts)
    assert "release promoted over HTTP: agent 'http-observed'" in log
    assert f"HTTP POST {route} refused from 127.0.0.1" in log and "UNAUTHENTICATED" in log
    assert "no-such-run" not in log
