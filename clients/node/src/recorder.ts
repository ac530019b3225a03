import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { toStruct } from "./convert.js";
import { Code, LedgerError } from "./errors.js";
import type { LedgerClient } from "./client.js";
import type { JsonObject, NewEvent, Run, RunStatus } from "./types.js";

export interface RecorderOptions {
  /** Events per AppendEvents batch (the daemon takes at most 1000 by default, and commits up to 200 per transaction, where its storage is fastest). Default 200. */
  maxBatchEvents?: number;
  /** Milliseconds a partial batch waits for company before it is sent. Default 50. */
  lingerMs?: number;
  /** Unacknowledged events at most; past that, `emit` waits. Default 10,000. */
  maxBufferedEvents?: number;
  /** How long to keep retrying a batch, or the call that ends the run, while the daemon is unreachable. Default 60 s. */
  retryTimeoutMs?: number;
}

interface Batch {
  key: string;
  events: NewEvent[];
}

const RETRYABLE = new Set<number>([Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED]);

/**
 * Records the events of one run in batches. `emit` buffers (await it to
 * respect backpressure); batches go out one at a time with the idempotency
 * key "<writer>:<n>", and a batch whose answer was lost is sent again
 * unchanged (events are stamped when emitted), so nothing is lost or
 * doubled across a daemon restart.
 */
export class RunRecorder {
  run: Run;
  readonly writerId = randomUUID();
  acknowledged = 0;
  lastSeq = 0;
  private readonly client: LedgerClient;
  private readonly maxBatch: number;
  private readonly lingerMs: number;
  private readonly maxBuffered: number;
  private readonly retryTimeoutMs: number;
  private readonly startedAt = Date.now();
  private open: NewEvent[] = [];
  private readonly sealed: Batch[] = [];
  private buffered = 0;
  private batchNo = 0;
  private linger: NodeJS.Timeout | undefined;
  private sending: Promise<void> | undefined;
  private error: unknown;
  private changed = deferred();

  constructor(client: LedgerClient, run: Run, options: RecorderOptions = {}) {
    this.client = client;
    this.run = run;
    this.maxBatch = options.maxBatchEvents ?? 200;
    this.lingerMs = options.lingerMs ?? 50;
    this.maxBuffered = Math.max(options.maxBufferedEvents ?? 10_000, this.maxBatch);
    this.retryTimeoutMs = options.retryTimeoutMs ?? 60_000;
  }

  get runId(): string {
    return this.run.runId;
  }

  /** Events emitted but not yet acknowledged. */
  get pending(): number {
    return this.buffered;
  }

  /** Queues one event; the promise resolves at once unless the buffer is full. */
  async emit(kind: string, payload: JsonObject = {}, timestamp: Date = new Date()): Promise<void> {
    this.throwIfFailed();
    if (!kind) throw new LedgerError(3, "kind: must be a non-empty string");
    toStruct(payload, "payload"); // refuse here what the daemon cannot store exactly, not later in a batch
    while (this.buffered >= this.maxBuffered) {
      await this.changed.promise;
      this.throwIfFailed();
    }
    this.open.push({ kind, payload, timestamp });
    this.buffered += 1;
    if (this.open.length >= this.maxBatch) this.seal();
    else this.linger ??= setTimeout(() => this.seal(), this.lingerMs);
  }

  /** Resolves when every emitted event is acknowledged. */
  async flush(): Promise<void> {
    this.seal();
    while (this.buffered > 0) {
      this.throwIfFailed();
      await this.changed.promise;
    }
    this.throwIfFailed();
  }

  /** Flushes, then completes the run with expectedTotalEvents = the events acknowledged. */
  async complete(options: { finalStateDigest?: string } = {}): Promise<Run> {
    await this.flush();
    const finish: { finalStateDigest?: string; durationMs: number; expectedTotalEvents: number } = {
      durationMs: Date.now() - this.startedAt,
      expectedTotalEvents: this.acknowledged,
    };
    if (options.finalStateDigest !== undefined) finish.finalStateDigest = options.finalStateDigest;
    this.run = await this.finish("completed", () => this.client.completeRun(this.runId, finish));
    return this.run;
  }

  /**
   * Keeps what can still be stored, then fails the run with `error` as the
   * reason ("Name: message", cut to the daemon's 4096 bytes). Rejects when
   * the daemon does not take the failure; the run is then still RUNNING.
   */
  async fail(error: unknown): Promise<Run> {
    let expected: number | undefined;
    try {
      await this.flush();
      expected = this.acknowledged;
    } catch {
      // the run is failing anyway; record it without the count guard
    }
    const reason = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    const options: { durationMs: number; expectedTotalEvents?: number } = { durationMs: Date.now() - this.startedAt };
    if (expected !== undefined) options.expectedTotalEvents = expected;
    this.run = await this.finish("failed", () => this.client.failRun(this.runId, reason, options));
    return this.run;
  }

  /**
   * Ends the run with `call`, retrying while the daemon is unreachable (for
   * `retryTimeoutMs`), so a restart at the wrong moment does not leave the
   * run RUNNING. A retry refused because the run is already terminal means
   * an earlier attempt was applied and its answer lost when the run is now
   * in `status`; otherwise the refusal stands.
   */
  private async finish(status: RunStatus, call: () => Promise<Run>): Promise<Run> {
    const giveUpAt = Date.now() + this.retryTimeoutMs;
    let delay = 50;
    let retried = false;
    for (;;) {
      try {
        return await call();
      } catch (error) {
        if (retried && error instanceof LedgerError && error.code === Code.FAILED_PRECONDITION) {
          const run = await this.client.getRun(this.runId);
          if (run.status === status) return run;
        }
        const retryable = error instanceof LedgerError && RETRYABLE.has(error.code);
        if (!retryable || Date.now() + delay > giveUpAt) throw error;
        retried = true;
        await sleep(delay);
        delay = Math.min(delay * 2, 1000);
      }
    }
  }

  private throwIfFailed(): void {
    if (this.error !== undefined) throw this.error;
  }

  private notify(): void {
    this.changed.resolve();
    this.changed = deferred();
  }

  private seal(): void {
    if (this.linger) clearTimeout(this.linger);
    this.linger = undefined;
    if (this.open.length === 0) return;
    this.batchNo += 1;
    this.sealed.push({ key: `${this.writerId}:${this.batchNo}`, events: this.open });
    this.open = [];
    this.sending ??= this.send().finally(() => {
      this.sending = undefined;
    });
  }

  private async send(): Promise<void> {
    while (this.sealed.length > 0 && this.error === undefined) {
      const batch = this.sealed[0]!;
      try {
        const result = await this.appendWithRetry(batch);
        this.sealed.shift();
        this.acknowledged += batch.events.length;
        this.buffered -= batch.events.length;
        this.lastSeq = Math.max(this.lastSeq, result);
      } catch (error) {
        this.error = error;
      }
      this.notify();
    }
  }

  private async appendWithRetry(batch: Batch): Promise<number> {
    const giveUpAt = Date.now() + this.retryTimeoutMs;
    let delay = 50;
    for (;;) {
      try {
        const result = await this.client.appendEvents(this.runId, batch.events, { idempotencyKey: batch.key });
        return result.lastSeq;
      } catch (error) {
        const retryable = error instanceof LedgerError && RETRYABLE.has(error.code);
        if (!retryable || Date.now() + delay > giveUpAt) throw error;
        await sleep(delay);
        delay = Math.min(delay * 2, 1000);
      }
    }
  }
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((done) => {
    resolve = done;
  });
  return { promise, resolve };
}
