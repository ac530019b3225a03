import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import {
  reasonText,
  statusToWire,
  toAppendResult,
  toEvent,
  toRelease,
  toRun,
  toStruct,
  toTimestamp,
  toVerification,
} from "./convert.js";
import { LedgerError, toLedgerError } from "./errors.js";
import { loadServices } from "./protos.js";
import { RunRecorder, type RecorderOptions } from "./recorder.js";
import type {
  AppendResult,
  CreateRunOptions,
  LedgerEvent,
  ListRunsOptions,
  NewEvent,
  Release,
  Run,
  RunPage,
  Verification,
} from "./types.js";

export const DEFAULT_TARGET = "127.0.0.1:50051";

export interface TlsOptions {
  /** PEM CA bundle to trust; the system roots when unset. */
  caFile?: string;
  /** Client certificate and key, PEM, for mutual TLS. */
  certFile?: string;
  keyFile?: string;
}

export interface ClientOptions {
  /** HOST:PORT; default $AIVCS_LEDGER_TARGET, then 127.0.0.1:50051. */
  target?: string;
  /** Sent as `authorization: Bearer <token>`; default $AIVCS_LEDGER_TOKEN. */
  token?: string;
  /** true (system roots) or the files to use; plaintext when unset. */
  tls?: boolean | TlsOptions;
  /** Deadline of each unary call; default 30 s. */
  timeoutMs?: number;
  /** Where proto/ is, if not found by itself. */
  protoRoot?: string;
  channelOptions?: grpc.ChannelOptions;
  /** Where the client reports what it cannot return to a caller (a run it could not mark failed); default `console`. */
  logger?: Logger;
}

/** The part of `console` the client uses. */
export interface Logger {
  warn(message: string): void;
}

/* eslint-disable @typescript-eslint/no-explicit-any */
type Wire = any;
type UnaryMethod = (
  request: Wire,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: (error: grpc.ServiceError | null, reply?: Wire) => void,
) => grpc.ClientUnaryCall;
type StreamMethod = (request: Wire, metadata: grpc.Metadata) => grpc.ClientReadableStream<Wire>;

function credentials(tls: ClientOptions["tls"]): grpc.ChannelCredentials {
  if (!tls) return grpc.credentials.createInsecure();
  const files = tls === true ? {} : tls;
  const read = (path?: string) => (path ? readFileSync(path) : null);
  if (Boolean(files.certFile) !== Boolean(files.keyFile)) {
    throw new Error("mutual TLS needs both certFile and keyFile");
  }
  return grpc.credentials.createSsl(read(files.caFile), read(files.keyFile), read(files.certFile));
}

function optional<T>(value: T | undefined | null): T | undefined {
  return value === null ? undefined : value;
}

/**
 * A client of the AIVCS ledger daemon: runs, their events, and releases.
 * Every failure rejects with a LedgerError carrying the gRPC code and the
 * daemon's message.
 */
export class LedgerClient {
  readonly target: string;
  private readonly runLedger: grpc.Client;
  private readonly eventStream: grpc.Client;
  private readonly releaseRegistry: grpc.Client;
  private readonly token: string | undefined;
  private readonly timeoutMs: number;
  readonly logger: Logger;

  constructor(options: ClientOptions = {}) {
    this.target = options.target ?? process.env.AIVCS_LEDGER_TARGET ?? DEFAULT_TARGET;
    this.token = options.token ?? (process.env.AIVCS_LEDGER_TOKEN || undefined);
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.logger = options.logger ?? console;
    const services = loadServices(options.protoRoot);
    const channelOptions: grpc.ChannelOptions = {
      // reconnect quickly after a daemon restart (gRPC's default backoff grows to two minutes)
      "grpc.initial_reconnect_backoff_ms": 200,
      "grpc.max_reconnect_backoff_ms": 2000,
      ...options.channelOptions,
    };
    this.runLedger = new services.RunLedger(this.target, credentials(options.tls), channelOptions);
    const shared = { channelOverride: this.runLedger.getChannel() };
    this.eventStream = new services.EventStream(this.target, grpc.credentials.createInsecure(), shared);
    this.releaseRegistry = new services.ReleaseRegistry(this.target, grpc.credentials.createInsecure(), shared);
  }

  // -- runs -------------------------------------------------------------------------

  async createRun(options: CreateRunOptions): Promise<Run> {
    const request: Wire = {
      specDigest: options.specDigest,
      agentName: options.agentName,
      tags: toStruct(options.tags ?? {}, "tags"),
      evaluation: {
        rubricPath: options.evaluation?.rubricPath ?? "",
        isPromotionGate: options.evaluation?.isPromotionGate ?? false,
        agentPhase: options.evaluation?.agentPhase ?? 0,
      },
    };
    if (options.gitSha !== undefined) request.gitSha = options.gitSha;
    if (options.runId !== undefined) request.runId = options.runId;
    return toRun((await this.unary(this.runLedger, "CreateRun", request)).run);
  }

  async getRun(runId: string): Promise<Run> {
    return toRun((await this.unary(this.runLedger, "GetRun", { runId })).run);
  }

  /**
   * Runs newest first, every filter combined with AND, fetching pages of
   * `pageSize` (default 100) as the iteration goes; at most `limit` runs.
   */
  async *listRuns(options: ListRunsOptions & { limit?: number } = {}): AsyncGenerator<Run> {
    const { limit, pageSize = 100, ...filters } = options;
    let pageToken = options.pageToken ?? "";
    let seen = 0;
    for (;;) {
      const size = limit === undefined ? pageSize : Math.max(1, Math.min(pageSize, limit - seen));
      const page = await this.listRunsPage({ ...filters, pageSize: size, pageToken });
      for (const run of page.runs) {
        if (limit !== undefined && seen >= limit) return;
        seen += 1;
        yield run;
      }
      pageToken = page.nextPageToken;
      if (!pageToken || (limit !== undefined && seen >= limit)) return;
    }
  }

  /** One page of runs, newest first; pass `nextPageToken` back as `pageToken` for the next ("" after the last). */
  async listRunsPage(options: ListRunsOptions = {}): Promise<RunPage> {
    const request: Wire = { pageSize: options.pageSize ?? 0, pageToken: options.pageToken ?? "" };
    if (options.specDigest !== undefined) request.specDigest = options.specDigest;
    if (options.agentName !== undefined) request.agentName = options.agentName;
    if (options.gitSha !== undefined) request.gitSha = options.gitSha;
    if (options.status !== undefined) request.status = statusToWire(options.status);
    if (options.createdAfter) request.createdAfter = toTimestamp(options.createdAfter);
    if (options.createdBefore) request.createdBefore = toTimestamp(options.createdBefore);
    const reply = await this.unary(this.runLedger, "ListRuns", request);
    return { runs: (reply.runs ?? []).map(toRun), nextPageToken: reply.nextPageToken ?? "" };
  }

  async completeRun(
    runId: string,
    options: { finalStateDigest?: string; durationMs?: number; expectedTotalEvents?: number } = {},
  ): Promise<Run> {
    const request: Wire = { runId, durationMs: options.durationMs ?? 0 };
    if (options.finalStateDigest !== undefined) request.finalStateDigest = options.finalStateDigest;
    if (options.expectedTotalEvents !== undefined) request.expectedTotalEvents = options.expectedTotalEvents;
    return toRun((await this.unary(this.runLedger, "CompleteRun", request)).run);
  }

  /** Fails a RUNNING run; `reason` is cut to the daemon's 4096 UTF-8 bytes (see `reasonText`). */
  async failRun(
    runId: string,
    reason: string,
    options: { durationMs?: number; expectedTotalEvents?: number } = {},
  ): Promise<Run> {
    const request: Wire = { runId, reason: reasonText(reason), durationMs: options.durationMs ?? 0 };
    if (options.expectedTotalEvents !== undefined) request.expectedTotalEvents = options.expectedTotalEvents;
    return toRun((await this.unary(this.runLedger, "FailRun", request)).run);
  }

  /** Cancels a RUNNING run; `reason` is cut as in `failRun`. */
  async cancelRun(runId: string, reason = "", options: { durationMs?: number } = {}): Promise<Run> {
    const request = { runId, reason: reasonText(reason), durationMs: options.durationMs ?? 0 };
    return toRun((await this.unary(this.runLedger, "CancelRun", request)).run);
  }

  /** Has the daemon recompute the run's hash chain from storage; `ok` false names the first broken seq. */
  async verifyRun(runId: string): Promise<Verification> {
    return toVerification(await this.unary(this.runLedger, "VerifyRun", { runId }));
  }

  // -- events -----------------------------------------------------------------------

  /** Appends one atomic batch; with `idempotencyKey`, a retry returns the first answer. */
  async appendEvents(
    runId: string,
    events: NewEvent[],
    options: { expectedLastSeq?: number; idempotencyKey?: string } = {},
  ): Promise<AppendResult> {
    const request: Wire = {
      runId,
      events: events.map((event, i) => ({
        kind: event.kind,
        payload: toStruct(event.payload ?? {}, `events[${i}].payload`),
        timestamp: toTimestamp(event.timestamp ?? new Date()),
      })),
    };
    if (options.expectedLastSeq !== undefined) request.expectedLastSeq = options.expectedLastSeq;
    if (options.idempotencyKey !== undefined) request.idempotencyKey = options.idempotencyKey;
    return toAppendResult(await this.unary(this.eventStream, "AppendEvents", request));
  }

  /** Stored events in ascending seq, one at a time (the chunks are unpacked). */
  async *readEvents(
    runId: string,
    options: { fromSeq?: number; toSeq?: number; kinds?: string[]; limit?: number } = {},
  ): AsyncGenerator<LedgerEvent> {
    const request = {
      runId,
      fromSeq: options.fromSeq ?? 0,
      toSeq: options.toSeq ?? 0,
      kinds: options.kinds ?? [],
      limit: options.limit ?? 0,
    };
    for await (const chunk of this.serverStream(this.eventStream, "ReadEvents", request)) {
      for (const event of chunk.events ?? []) yield toEvent(event);
    }
  }

  /** Stored events from `fromSeq`, then live ones as they are appended; ends when the run is terminal. */
  async *subscribeEvents(runId: string, options: { fromSeq?: number } = {}): AsyncGenerator<LedgerEvent> {
    const request = { runId, fromSeq: options.fromSeq ?? 0 };
    for await (const chunk of this.serverStream(this.eventStream, "SubscribeEvents", request)) {
      for (const event of chunk.events ?? []) yield toEvent(event);
    }
  }

  // -- releases ---------------------------------------------------------------------

  async promote(options: {
    agentName: string;
    specDigest: string;
    promotedBy: string;
    versionLabel?: string;
    notes?: string;
    expectedCurrentSpecDigest?: string;
    requireSuccessfulRun?: boolean;
  }): Promise<Release> {
    const request: Wire = {
      agentName: options.agentName,
      specDigest: options.specDigest,
      promotedBy: options.promotedBy,
      requireSuccessfulRun: options.requireSuccessfulRun ?? false,
    };
    for (const key of ["versionLabel", "notes", "expectedCurrentSpecDigest"] as const) {
      if (options[key] !== undefined) request[key] = options[key];
    }
    return toRelease((await this.unary(this.releaseRegistry, "Promote", request)).release);
  }

  async rollback(options: {
    agentName: string;
    promotedBy: string;
    toSpecDigest?: string;
    expectedCurrentSpecDigest?: string;
    notes?: string;
  }): Promise<Release> {
    const request: Wire = { agentName: options.agentName, promotedBy: options.promotedBy };
    for (const key of ["toSpecDigest", "expectedCurrentSpecDigest", "notes"] as const) {
      if (options[key] !== undefined) request[key] = options[key];
    }
    return toRelease((await this.unary(this.releaseRegistry, "Rollback", request)).release);
  }

  /** The agent's current release; rejects with NOT_FOUND when it has none. */
  async currentRelease(agentName: string): Promise<Release> {
    return toRelease((await this.unary(this.releaseRegistry, "GetCurrent", { agentName })).release);
  }

  async releaseHistory(
    agentName: string,
    options: { pageSize?: number; pageToken?: string } = {},
  ): Promise<{ releases: Release[]; nextPageToken: string }> {
    const request = { agentName, pageSize: options.pageSize ?? 0, pageToken: options.pageToken ?? "" };
    const reply = await this.unary(this.releaseRegistry, "GetHistory", request);
    return { releases: (reply.releases ?? []).map(toRelease), nextPageToken: optional(reply.nextPageToken) ?? "" };
  }

  // -- the run helper ---------------------------------------------------------------

  /** Creates a run and returns its recorder: `emit` events, then `complete()` or `fail(error)`. */
  async startRun(options: CreateRunOptions & RecorderOptions): Promise<RunRecorder> {
    const run = await this.createRun(options);
    return new RunRecorder(this, run, options);
  }

  /**
   * Records one run around `body`: completes it (with expectedTotalEvents =
   * the events acknowledged) when `body` resolves, fails it with the error
   * as reason when `body` throws, and then rethrows that error. When its
   * last events cannot be stored the run is failed too, and that error is
   * thrown. A run that cannot be marked failed (the daemon unreachable) is
   * reported through `logger.warn`; the caller still gets the body's error.
   */
  async recordRun(
    options: CreateRunOptions & RecorderOptions,
    body: (run: RunRecorder) => Promise<void>,
  ): Promise<Run> {
    const recorder = await this.startRun(options);
    try {
      await body(recorder);
    } catch (error) {
      await this.failOrWarn(recorder, error);
      throw error;
    }
    try {
      return await recorder.complete();
    } catch (error) {
      if (recorder.run.status === "running") await this.failOrWarn(recorder, error);
      throw error;
    }
  }

  close(): void {
    this.runLedger.close();
  }

  // -- plumbing ---------------------------------------------------------------------

  /** Fails the recorder's run; a failure to do so is logged, never thrown over the error that caused it. */
  private async failOrWarn(recorder: RunRecorder, cause: unknown): Promise<void> {
    try {
      await recorder.fail(cause);
    } catch (failure) {
      const why = failure instanceof Error ? failure.message : String(failure);
      this.logger.warn(`aivcs-ledger: run ${recorder.runId} could not be marked failed and may stay RUNNING: ${why}`);
    }
  }

  private metadata(): grpc.Metadata {
    const metadata = new grpc.Metadata();
    if (this.token) metadata.set("authorization", `Bearer ${this.token}`);
    return metadata;
  }

  private unary(client: grpc.Client, method: string, request: Wire): Promise<Wire> {
    const call = (client as unknown as Record<string, UnaryMethod>)[method]!.bind(client);
    return new Promise((resolve, reject) => {
      call(request, this.metadata(), { deadline: Date.now() + this.timeoutMs }, (error, reply) => {
        if (error) reject(toLedgerError(error));
        else resolve(reply);
      });
    });
  }

  private async *serverStream(client: grpc.Client, method: string, request: Wire): AsyncGenerator<Wire> {
    const open = (client as unknown as Record<string, StreamMethod>)[method]!.bind(client);
    const call = open(request, this.metadata());
    try {
      for await (const chunk of call) yield chunk;
    } catch (error) {
      throw toLedgerError(error);
    } finally {
      call.cancel();
    }
  }
}

export { LedgerError };
