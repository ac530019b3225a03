// The TypeScript client against the real daemon: create, append, read,
// subscribe, complete; the run helper; errors; releases; the example agent.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { LedgerClient, LedgerError, Code } from "../dist/src/index.js";
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
  });

  test("idempotency keys make an append safe to retry", async () => {
    const run = await client.createRun({ specDigest: digest(), agentName: unique("idem") });
    const events = [{ kind: "a", payload: { n: 1 }, timestamp: new Date("2026-01-02T03:04:05.006Z") }];
    const first = await client.appendEvents(run.runId, events, { idempotencyKey: "k" });
    const again = await client.appendEvents(run.runId, events, { idempotencyKey: "k" });
    assert.deepEqual(again, { ...first, replayed: true });
    assert.equal((await client.getRun(run.runId)).totalEvents, 1);
  });

  test("listRuns pages newest first", async () => {
    const agentName = unique("list");
    const ids = [];
    for (let i = 0; i < 3; i += 1) ids.push((await client.createRun({ specDigest: digest(), agentName })).runId);
    const page1 = await client.listRuns({ agentName, pageSize: 2 });
    assert.deepEqual(page1.runs.map((r) => r.runId), [ids[2], ids[1]]);
    const page2 = await client.listRuns({ agentName, pageSize: 2, pageToken: page1.nextPageToken });
    assert.deepEqual(page2.runs.map((r) => r.runId), [ids[0]]);
    assert.equal(page2.nextPageToken, "");
    assert.equal((await client.listRuns({ agentName, status: "completed" })).runs.length, 0);
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
