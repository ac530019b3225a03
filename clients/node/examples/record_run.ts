// An example agent: records one run of a toy "research" agent in the ledger,
// then reads the run back. Run it against a daemon:
//
//   aivcs-ledgerd --listen 127.0.0.1:50051 --db mem:// &
//   npm run example                    # or: AIVCS_LEDGER_TARGET=host:port node dist/examples/record_run.js
import { createHash } from "node:crypto";
import { LedgerClient } from "../src/index.js";

const client = new LedgerClient(); // $AIVCS_LEDGER_TARGET or 127.0.0.1:50051; $AIVCS_LEDGER_TOKEN if set
const specDigest = createHash("sha256").update("research-agent spec v1").digest("hex");

try {
  // recordRun completes the run when the body resolves and fails it (with the
  // error as reason) when the body throws.
  const run = await client.recordRun(
    { specDigest, agentName: "research-agent", tags: { example: true, language: "typescript" } },
    async (recorder) => {
      await recorder.emit("node_entered", { node: "plan" });
      for (const query of ["weather in Paris", "weather in Oslo"]) {
        await recorder.emit("tool_called", { tool: "search", query });
        await recorder.emit("tool_result", { tool: "search", hits: query.length });
      }
      await recorder.emit("node_exited", { node: "plan", ok: true });
    },
  );
  console.log(`run ${run.runId} ${run.status} with ${run.totalEvents} events`);
  for await (const event of client.readEvents(run.runId)) {
    console.log(`${String(event.seq).padStart(4)}  ${event.kind.padEnd(14)} ${JSON.stringify(event.payload)}`);
  }
} finally {
  client.close();
}
