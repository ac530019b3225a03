// The TypeScript client against the real daemon: create, append, read,
// subscribe, complete; the run helper; errors; releases; the example agent.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { createHash, randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { LedgerClient, LedgerError, Code, reasonText, MAX_REASON_BYTES } from "../dist/src/index.js";
import { startDaemon } from "./daemon.mjs";

const digest = (text = randomUUID()) => createHash("sha256").update(text).digest("hex");
const unique = (prefix) => `${prefix}-${randomUUID().slice(0, 8)}`;

describe("LedgerClient against aivcs-ledgerd", () => {
  let daemon;
  let client;

  before(async () => {
    daemon = await startDaemon();
    client = new LedgerClient({ target: daemon.target });
  });

  after(async () => {
    client?.close();
    await daemon?.stop();
  });

  test("create, append, read, complete", async () => {
    const run = await client.createRun({ specDigest: digest(), agentName: unique("node"), gitSha: "abc123", tags: { team: "ts" } });
    assert.equal(run.status, "running");
    assert.equal(run.totalEvents, 0);
    assert.equal(run.gitSha, "abc123");
    assert.deepEqual(run.tags, { team: "ts" });

    const first = await client.appendEvents(run.runId, [
      { kind: "node_entered", payload: { node: "plan", depth: 1, nested: { list: [1, "two", true, null] } } },
      { kind: "tool_called", payload: { tool: "search" } },
    ]);
    assert.deepEqual(first, { firstSeq: 1, lastSeq: 2, replayed: false });
    const second = await client.appendEvents(run.runId, [{ kind: "node_exited" }], { expectedLastSeq: 2 });
    assert.equal(second.lastSeq, 3);

    await assert.rejects(
      client.appendEvents(run.runId, [{ kind: "stale" }], { expectedLastSeq: 1 }),
      (error) =>
        error instanceof LedgerError &&
        error.code === Code.ABORTED &&
        error.reason === "ERROR_REASON_LAST_SEQ_MISMATCH" &&
        error.lastSeq === 3 &&
        error.metadata.run_id === run.runId,
    );
    const events = [];
    for await (const event of client.readEvents(run.runId)) events.push(event);
    assert.deepEqual(events.map((e) => e.seq), [1, 2, 3]);
    assert.deepEqual(events.map((e) => e.kind), ["node_entered", "tool_called", "node_exited"]);
    assert.deepEqual(events[0].payload, { node: "plan", depth: 1, nested: { list: [1, "two", true, null] } });
    assert.match(events[0].timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$/);
    assert.equal(events[0].digest.length, 64);

    const filtered = [];
    for await (const event of client.readEvents(run.runId, { kinds: ["tool_called"] })) filtered.push(event.seq);
    assert.deepEqual(filtered, [2]);

    const done = await client.completeRun(run.runId, { expectedTotalEvents: 3, durationMs: 12 });
    assert.equal(done.status, "completed");
    assert.equal(done.success, true);
    assert.equal(done.totalEvents, 3);
    assert.ok(done.completedAt instanceof Date);
  });

  test("subscribe yields stored then live events and ends when the run completes", async () => {
    const run = await client.createRun({ specDigest: digest(), agentName: unique("sub") });
    await client.appendEvents(run.runId, [{ kind: "stored", payload: { i: 0 } }]);
    const seen = [];
    const following = (async () => {
      for await (const event of client.subscribeEvents(run.runId)) seen.push(event);
    })();
    for (let i = 1; i <= 3; i += 1) {
      await new Promise((resolve) => setTimeout(resolve, 30));
      await client.appendEvents(run.runId, [{ kind: "live", payload: { i } }]);
    }
    await client.completeRun(run.runId, { expectedTotalEvents: 4 });
    await following;
    assert.deepEqual(seen.map((e) => e.seq), [1, 2, 3, 4]);
    assert.deepEqual(seen.map((e) => e.payload.i), [0, 1, 2, 3]);
  });

  test("recordRun completes with the acknowledged total, batching many events", async () => {
    const run = await client.recordRun(
      { specDigest: digest(), agentName: unique("rec"), maxBatchEvents: 200 },
      async (recorder) => {
        for (let i = 0; i < 2500; i += 1) await recorder.emit("step", { i });
      },
    );
    assert.equal(run.status, "completed");
    assert.equal(run.totalEvents, 2500);
    let expected = 1;
    for await (const event of client.readEvents(run.runId)) {
      assert.equal(event.seq, expected);
      assert.equal(event.payload.i, expected - 1);
      expected += 1;
    }
    assert.equal(expected, 2501);
  });

  test("recordRun fails the run with the error as reason and rethrows", async () => {
    let runId;
    await assert.rejects(
      client.recordRun({ specDigest: digest(), agentName: unique("rec") }, async (recorder) => {
        runId = recorder.runId;
        await recorder.emit("step", { i: 0 });
        throw new Error("tool crashed");
      }),
      /tool crashed/,
    );
    const stored = await client.getRun(runId);
    assert.equal(stored.status, "failed");
    assert.equal(stored.statusReason, "Error: tool crashed");
    assert.equal(stored.totalEvents, 1);
  });

  test("errors carry the gRPC code and the daemon's message", async () => {
    await assert.rejects(client.getRun("no-such-run"), (error) => {
      assert.ok(error instanceof LedgerError);
      assert.equal(error.code, Code.NOT_FOUND);
      assert.equal(error.codeName, "NOT_FOUND");
      assert.match(error.details, /no-such-run/);
      return true;
    });
    await assert.rejects(client.createRun({ specDigest: "nope", agentName: "a" }), (error) => {
      assert.equal(error.code, Code.INVALID_ARGUMENT);
      assert.match(error.details, /spec_digest/);
      return true;
    });
    const run = await client.createRun({ specDigest: digest(), agentName: unique("err") });
    await assert.rejects(client.appendEvents(run.runId, [{ kind: "x" }], { expectedLastSeq: 5 }), { code: Code.ABORTED });
    await client.cancelRun(run.runId, "stop");
    await assert.rejects(client.appendEvents(run.runId, [{ kind: "x" }]), { code: Code.FAILED_PRECONDITION });
    await assert.rejects(client.appendEvents(run.runId, [{ kind: "x" }]), (error) => {
      assert.equal(error.reason, "ERROR_REASON_RUN_TERMINAL");
      assert.equal(error.runStatus, "cancelled");
      return true;
    });
  });

  test("idempotency keys make an append safe to retry", async () => {
    const run = await client.createRun({ specDigest: digest(), agentName: unique("idem") });
    const events = [{ kind: "a", payload: { n: 1 }, timestamp: new Date("2026-01-02T03:04:05.006Z") }];
    const first = await client.appendEvents(run.runId, events, { idempotencyKey: "k" });
    const again = await client.appendEvents(run.runId, events, { idempotencyKey: "k" });
    assert.deepEqual(again, { ...first, replayed: true });
    assert.equal((await client.getRun(run.runId)).totalEvents, 1);
  });

  test("listRuns iterates over every page newest first; listRunsPage returns one page", async () => {
    const agentName = unique("list");
    const ids = [];
    for (let i = 0; i < 5; i += 1) ids.push((await client.createRun({ specDigest: digest(), agentName })).runId);
    const newestFirst = [...ids].reverse();
    const all = [];
    for await (const run of client.listRuns({ agentName, pageSize: 2 })) all.push(run.runId);
    assert.deepEqual(all, newestFirst);
    const limited = [];
    for await (const run of client.listRuns({ agentName, pageSize: 2, limit: 3 })) limited.push(run.runId);
    assert.deepEqual(limited, newestFirst.slice(0, 3));
    const completed = [];
    for await (const run of client.listRuns({ agentName, status: "completed" })) completed.push(run);
    assert.equal(completed.length, 0);

    const page1 = await client.listRunsPage({ agentName, pageSize: 3 });
    assert.deepEqual(page1.runs.map((r) => r.runId), newestFirst.slice(0, 3));
    const page2 = await client.listRunsPage({ agentName, pageSize: 3, pageToken: page1.nextPageToken });
    assert.deepEqual(page2.runs.map((r) => r.runId), newestFirst.slice(3));
    assert.equal(page2.nextPageToken, "");
  });

  test("verifyRun recomputes the hash chain of a stored run", async () => {
    const run = await client.recordRun({ specDigest: digest(), agentName: unique("verify") }, async (recorder) => {
      for (let i = 0; i < 25; i += 1) await recorder.emit("step", { i });
    });
    const verdict = await client.verifyRun(run.runId);
    assert.deepEqual(verdict, { ok: true, verifiedEvents: 25, eventsDigest: run.eventsDigest, reason: "" });
    assert.equal(verdict.firstBrokenSeq, undefined);
    await assert.rejects(client.verifyRun("no-such-run"), { code: Code.NOT_FOUND });
  });

  test("recordRun fails a run whose error message is longer than the daemon's 4096 bytes", async () => {
    let runId;
    const message = "€".repeat(3000); // 3 bytes each: 9000 bytes in 3000 characters
    await assert.rejects(
      client.recordRun({ specDigest: digest(), agentName: unique("long") }, async (recorder) => {
        runId = recorder.runId;
        await recorder.emit("step", { i: 0 });
        throw new Error(message);
      }),
      (error) => error.message === message,
    );
    const stored = await client.getRun(runId);
    assert.equal(stored.status, "failed");
    assert.equal(stored.totalEvents, 1);
    assert.ok(Buffer.byteLength(stored.statusReason) <= 4096, `${Buffer.byteLength(stored.statusReason)} bytes`);
    assert.match(stored.statusReason, /^Error: (€)+…$/u);
  });

  test("reasonText cuts by UTF-8 bytes on a code point boundary", () => {
    assert.equal(MAX_REASON_BYTES, 4096);
    assert.equal(reasonText("short"), "short");
    const exact = "a".repeat(4096);
    assert.equal(reasonText(exact), exact);
    for (const unit of ["€", "😀", "é"]) {
      for (const lead of ["", "a", "ab", "abc"]) {
        const cut = reasonText(lead + unit.repeat(3000));
        assert.ok(Buffer.byteLength(cut) <= 4096, `${unit} after ${lead.length}`);
        assert.ok(Buffer.byteLength(cut) > 4096 - 4 - 3, `${unit} after ${lead.length}: cut too short`);
        assert.ok(cut.endsWith("…"));
        assert.ok(!cut.includes("\uFFFD"), "no split code point");
      }
    }
    assert.equal(reasonText("a\0b"), "a\uFFFDb");
  });

  test("a run that cannot be marked failed is logged and the body's error is kept", async () => {
    const warnings = [];
    const logged = new LedgerClient({ target: daemon.target, logger: { warn: (message) => warnings.push(message) } });
    let runId;
    try {
      await assert.rejects(
        logged.recordRun({ specDigest: digest(), agentName: unique("gone") }, async (recorder) => {
          runId = recorder.runId;
          await logged.cancelRun(recorder.runId, "cancelled by an operator");
          throw new Error("the body's own error");
        }),
        /the body's own error/,
      );
    } finally {
      logged.close();
    }
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], new RegExp(`run ${runId} could not be marked failed.*CANCELLED`));
    assert.equal((await client.getRun(runId)).status, "cancelled");
  });

  test("recordRun fails the run when its last events are refused", async () => {
    let runId;
    await assert.rejects(
      client.recordRun({ specDigest: digest(), agentName: unique("refused") }, async (recorder) => {
        runId = recorder.runId;
        await recorder.emit("ok", { i: 0 });
        await recorder.flush();
        await recorder.emit("k".repeat(1000), { i: 1 }); // longer than a kind may be
      }),
      (error) => error instanceof LedgerError && error.code === Code.INVALID_ARGUMENT && /kind/.test(error.details),
    );
    const stored = await client.getRun(runId);
    assert.equal(stored.status, "failed");
    assert.equal(stored.totalEvents, 1);
    assert.match(stored.statusReason, /kind/);
  });

  test("integers beyond 2^53 are refused with the field's path; nothing is stored", async () => {
    const run = await client.createRun({ specDigest: digest(), agentName: unique("big") });
    const refused = (path) => (error) =>
      error instanceof LedgerError && error.code === Code.INVALID_ARGUMENT && error.details.startsWith(`${path}: `) && /2\^53/.test(error.details);
    await assert.rejects(
      client.appendEvents(run.runId, [{ kind: "a" }, { kind: "b", payload: { order: { ids: [1, 2 ** 53 + 2] } } }]),
      refused("events[1].payload.order.ids[1]"),
    );
    await assert.rejects(client.appendEvents(run.runId, [{ kind: "a", payload: { n: 2n ** 60n } }]), refused("events[0].payload.n"));
    await assert.rejects(client.appendEvents(run.runId, [{ kind: "a", payload: { n: -(2 ** 60) } }]), refused("events[0].payload.n"));
    await assert.rejects(client.appendEvents(run.runId, [{ kind: "a", payload: { n: 1e300 } }]), refused("events[0].payload.n"));
    await assert.rejects(client.createRun({ specDigest: digest(), agentName: "big", tags: { budget: 2 ** 64 } }), refused("tags.budget"));
    assert.equal((await client.getRun(run.runId)).totalEvents, 0);

    // The largest exact integers, small BigInts and fractions still go through exactly.
    const exact = { max: Number.MAX_SAFE_INTEGER, min: Number.MIN_SAFE_INTEGER, small: 7n, tiny: 1.5e-300, half: 0.5 };
    await client.appendEvents(run.runId, [{ kind: "exact", payload: exact }]);
    const stored = [];
    for await (const event of client.readEvents(run.runId)) stored.push(event);
    const [event] = stored;
    assert.deepEqual(event.payload, { ...exact, small: 7 });

    const recorder = await client.startRun({ specDigest: digest(), agentName: unique("big") });
    await assert.rejects(recorder.emit("step", { deep: [{ n: 2 ** 53 }] }), refused("payload.deep[0].n"));
    await recorder.emit("step", { n: 1 }); // the recorder goes on after a refused emit
    assert.equal((await recorder.complete()).totalEvents, 1);
  });

  test("releases: promote, rollback, current, history", async () => {
    const agentName = unique("rel");
    const [v1, v2] = [digest("v1"), digest("v2")];
    await assert.rejects(client.currentRelease(agentName), { code: Code.NOT_FOUND });
    const first = await client.promote({ agentName, specDigest: v1, promotedBy: "ci", versionLabel: "v1" });
    assert.equal(first.sequence, 1);
    assert.equal(first.versionLabel, "v1");
    assert.equal(first.rollbackOf, undefined);
    await client.promote({ agentName, specDigest: v2, promotedBy: "ci", expectedCurrentSpecDigest: v1 });
    const back = await client.rollback({ agentName, promotedBy: "oncall" });
    assert.equal(back.specDigest, v1);
    assert.equal(back.rollbackOf, 1);
    assert.deepEqual(await client.currentRelease(agentName), back);
    const history = await client.releaseHistory(agentName);
    assert.deepEqual(history.releases.map((r) => r.sequence), [3, 2, 1]);
  });

  test("the example agent records a run", async () => {
    const script = fileURLToPath(new URL("../dist/examples/record_run.js", import.meta.url));
    const { stdout } = await promisify(execFile)(process.execPath, [script], {
      env: { ...process.env, AIVCS_LEDGER_TARGET: daemon.target },
      timeout: 30_000,
    });
    const match = /^run (\S+) completed with 6 events$/m.exec(stdout);
    assert.ok(match, stdout);
    const run = await client.getRun(match[1]);
    assert.equal(run.agentName, "research-agent");
    assert.equal(run.totalEvents, 6);
  });
});

describe("LedgerClient across a daemon restart", () => {
  test("recordRun still fails the run when the daemon restarts just as the body throws", async () => {
    const db = `surrealkv://${join(mkdtempSync(join(tmpdir(), "aivcs-node-restart-")), "ledger")}`;
    const first = await startDaemon({ db });
    const warnings = [];
    const client = new LedgerClient({ target: first.target, timeoutMs: 5000, logger: { warn: (m) => warnings.push(m) } });
    let restarted;
    let runId;
    try {
      await assert.rejects(
        client.recordRun({ specDigest: digest(), agentName: unique("restart"), retryTimeoutMs: 60_000 }, async (recorder) => {
          runId = recorder.runId;
          await recorder.emit("step", { i: 0 });
          await recorder.flush();
          await first.stop();
          // The same store on the same port, back while the recorder is still retrying.
          restarted = sleep(300).then(() => startDaemon({ db, listen: first.target }));
          throw new Error("the agent crashed while the ledger restarted");
        }),
        /the agent crashed/,
      );
      await restarted;
      // Its own subchannel: grpc-js shares them between clients, and the recorder's may be in reconnect backoff.
      const reader = new LedgerClient({ target: first.target, channelOptions: { "grpc.use_local_subchannel_pool": 1 } });
      const stored = await reader.getRun(runId).finally(() => reader.close());
      assert.equal(stored.status, "failed");
      assert.equal(stored.totalEvents, 1);
      assert.equal(stored.statusReason, "Error: the agent crashed while the ledger restarted");
      assert.deepEqual(warnings, []);
    } finally {
      client.close();
      await first.stop();
      await (await restarted)?.stop();
    }
  });
});

describe("LedgerClient without a daemon", () => {
  test("an unreachable daemon is UNAVAILABLE", async () => {
    const client = new LedgerClient({ target: "127.0.0.1:1", timeoutMs: 5000 });
    try {
      await assert.rejects(client.getRun("x"), (error) => error instanceof LedgerError && error.code === Code.UNAVAILABLE);
    } finally {
      client.close();
    }
  });
});
