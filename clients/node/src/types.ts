/** JSON values, as event payloads and run tags carry them. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

export type RunStatus = "running" | "completed" | "failed" | "cancelled";

export interface Evaluation {
  rubricPath: string;
  isPromotionGate: boolean;
  agentPhase: number;
}

/** One execution of an agent, as the ledger records it. */
export interface Run {
  runId: string;
  specDigest: string;
  agentName: string;
  gitSha?: string;
  tags: JsonObject;
  evaluation: Evaluation;
  status: RunStatus;
  /** Always equals the last assigned seq. */
  totalEvents: number;
  finalStateDigest?: string;
  durationMs: number;
  success: boolean;
  createdAt?: Date;
  completedAt?: Date;
  eventsDigest: string;
  statusReason: string;
}

/** An event to append. `timestamp` unset means "now" (taken by the client). */
export interface NewEvent {
  kind: string;
  payload?: JsonObject;
  timestamp?: Date;
}

/** A stored event: `seq` is 1, 2, 3, ... within its run. */
export interface LedgerEvent {
  runId: string;
  seq: number;
  kind: string;
  payload: JsonObject;
  /** RFC 3339, UTC, nanosecond precision where the event has it. */
  timestamp: string;
  digest: string;
}

export interface AppendResult {
  firstSeq: number;
  lastSeq: number;
  replayed: boolean;
}

export interface Release {
  agentName: string;
  specDigest: string;
  versionLabel?: string;
  promotedBy: string;
  notes?: string;
  createdAt?: Date;
  sequence: number;
  rollbackOf?: number;
}

/** The outcome of VerifyRun: whether the run's stored hash chain holds. */
export interface Verification {
  /** Every digest matches, seqs run 1..totalEvents without a gap, and the head matches the run. */
  ok: boolean;
  verifiedEvents: number;
  /** The recomputed head of the chain. */
  eventsDigest: string;
  /** The first seq missing or not matching; unset when ok. */
  firstBrokenSeq?: number;
  /** Why the chain breaks there; "" when ok. */
  reason: string;
}

/** One page of ListRuns. */
export interface RunPage {
  runs: Run[];
  /** Pass back as `pageToken` for the next page; "" after the last. */
  nextPageToken: string;
}

export interface CreateRunOptions {
  specDigest: string;
  agentName: string;
  gitSha?: string;
  tags?: JsonObject;
  evaluation?: Partial<Evaluation>;
  /** Client-chosen id: makes the call safe to retry. */
  runId?: string;
}

export interface ListRunsOptions {
  specDigest?: string;
  agentName?: string;
  gitSha?: string;
  status?: RunStatus;
  createdAfter?: Date;
  createdBefore?: Date;
  pageSize?: number;
  pageToken?: string;
}
