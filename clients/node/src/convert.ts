// Between the plain objects @grpc/proto-loader decodes and the client's types.
// Struct and Timestamp are the only well-known types the contract uses.
import { status } from "@grpc/grpc-js";
import { LedgerError } from "./errors.js";
import type {
  AppendResult,
  Evaluation,
  Json,
  JsonObject,
  LedgerEvent,
  Release,
  Run,
  RunStatus,
  Verification,
} from "./types.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Wire = any;

/**
 * A JSON value as a google.protobuf.Value. `path` names the value in errors
 * ("payload.items[2].id"). Struct numbers are doubles, so an integer beyond
 * 2^53 would arrive changed: it is refused, as is a BigInt that no double
 * holds exactly, rather than stored rounded.
 */
export function toValue(value: Json | bigint | undefined, path = "value"): Wire {
  if (value === null) return { nullValue: "NULL_VALUE" };
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw invalid(path, `${value} has no JSON form`);
    if (Number.isInteger(value) && !Number.isSafeInteger(value)) {
      throw invalid(path, `integer ${value} is beyond 2^53 and would lose precision; send it as a string`);
    }
    return { numberValue: value };
  }
  if (typeof value === "bigint") {
    if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw invalid(path, `integer ${value} is beyond 2^53 and would lose precision; send it as a string`);
    }
    return { numberValue: Number(value) };
  }
  if (typeof value === "string") return { stringValue: value };
  if (typeof value === "boolean") return { boolValue: value };
  if (Array.isArray(value)) return { listValue: { values: value.map((item, i) => toValue(item, `${path}[${i}]`)) } };
  if (typeof value === "object") return { structValue: toStruct(value, path) };
  throw invalid(path, `${typeof value} is not a JSON value`);
}

/** A JSON object as a google.protobuf.Struct; keys whose value is `undefined` are left out, as JSON.stringify does. */
export function toStruct(object: JsonObject, path = "value"): Wire {
  if (typeof object !== "object" || object === null || Array.isArray(object)) {
    throw invalid(path, `must be an object, got ${Array.isArray(object) ? "an array" : typeof object}`);
  }
  const fields: Record<string, Wire> = {};
  for (const [key, value] of Object.entries(object)) {
    if (value !== undefined) fields[key] = toValue(value, `${path}.${key}`);
  }
  return { fields };
}

function invalid(path: string, problem: string): LedgerError {
  return new LedgerError(status.INVALID_ARGUMENT, `${path}: ${problem}`);
}

export function fromValue(value: Wire): Json {
  switch (value?.kind) {
    case "numberValue":
      return value.numberValue;
    case "stringValue":
      return value.stringValue;
    case "boolValue":
      return value.boolValue;
    case "structValue":
      return fromStruct(value.structValue);
    case "listValue":
      return (value.listValue?.values ?? []).map(fromValue);
    default:
      return null;
  }
}

export function fromStruct(struct: Wire): JsonObject {
  const result: JsonObject = {};
  for (const [key, value] of Object.entries(struct?.fields ?? {})) result[key] = fromValue(value);
  return result;
}

/** The most UTF-8 bytes the daemon stores as a run's status_reason. */
export const MAX_REASON_BYTES = 4096;

/**
 * `reason` as the daemon will take it: at most MAX_REASON_BYTES of UTF-8,
 * cut on a code point boundary and marked with "…" when cut, NUL characters
 * (which the daemon refuses) replaced by U+FFFD.
 */
export function reasonText(reason: string): string {
  const encoded = new TextEncoder().encode(reason.replaceAll("\0", "\uFFFD"));
  if (encoded.length <= MAX_REASON_BYTES) return new TextDecoder().decode(encoded);
  const marker = "…"; // 3 bytes
  let end = MAX_REASON_BYTES - 3;
  while (end > 0 && (encoded[end]! & 0xc0) === 0x80) end -= 1; // back off a continuation byte
  return new TextDecoder().decode(encoded.subarray(0, end)) + marker;
}

export function toTimestamp(date: Date): Wire {
  const ms = date.getTime();
  return { seconds: Math.floor(ms / 1000), nanos: (((ms % 1000) + 1000) % 1000) * 1_000_000 };
}

function present(message: Wire, field: string): boolean {
  // proto3 `optional` fields are synthetic oneofs named "_field"; messages are null when unset.
  const oneof = message?.[`_${field}`];
  if (oneof !== undefined) return oneof === field;
  return message?.[field] !== null && message?.[field] !== undefined;
}

export function fromTimestamp(stamp: Wire): Date | undefined {
  if (!stamp) return undefined;
  return new Date(Number(stamp.seconds) * 1000 + Math.floor(stamp.nanos / 1_000_000));
}

/** RFC 3339 with the nanoseconds the Timestamp holds. */
export function timestampString(stamp: Wire): string {
  const seconds = Number(stamp?.seconds ?? 0);
  const nanos = Number(stamp?.nanos ?? 0);
  const base = new Date(seconds * 1000).toISOString().slice(0, 19);
  return `${base}.${String(nanos).padStart(9, "0")}Z`;
}

const STATUS: Record<string, RunStatus> = {
  RUN_STATUS_RUNNING: "running",
  RUN_STATUS_COMPLETED: "completed",
  RUN_STATUS_FAILED: "failed",
  RUN_STATUS_CANCELLED: "cancelled",
};

export function statusToWire(status: RunStatus): string {
  return `RUN_STATUS_${status.toUpperCase()}`;
}

export function toRun(run: Wire): Run {
  const evaluation: Evaluation = {
    rubricPath: run.evaluation?.rubricPath ?? "",
    isPromotionGate: Boolean(run.evaluation?.isPromotionGate),
    agentPhase: Number(run.evaluation?.agentPhase ?? 0),
  };
  const result: Run = {
    runId: run.runId,
    specDigest: run.specDigest,
    agentName: run.agentName,
    tags: fromStruct(run.tags),
    evaluation,
    status: STATUS[run.status] ?? "running",
    totalEvents: Number(run.totalEvents),
    durationMs: Number(run.durationMs),
    success: Boolean(run.success),
    eventsDigest: run.eventsDigest ?? "",
    statusReason: run.statusReason ?? "",
  };
  if (present(run, "gitSha")) result.gitSha = run.gitSha;
  if (present(run, "finalStateDigest")) result.finalStateDigest = run.finalStateDigest;
  const created = fromTimestamp(run.createdAt);
  if (created) result.createdAt = created;
  const completed = fromTimestamp(run.completedAt);
  if (completed) result.completedAt = completed;
  return result;
}

export function toEvent(event: Wire): LedgerEvent {
  return {
    runId: event.runId,
    seq: Number(event.seq),
    kind: event.kind,
    payload: fromStruct(event.payload),
    timestamp: timestampString(event.timestamp),
    digest: event.digest ?? "",
  };
}

export function toRelease(release: Wire): Release {
  const result: Release = {
    agentName: release.agentName,
    specDigest: release.specDigest,
    promotedBy: release.promotedBy,
    sequence: Number(release.sequence),
  };
  if (present(release, "versionLabel")) result.versionLabel = release.versionLabel;
  if (present(release, "notes")) result.notes = release.notes;
  if (present(release, "rollbackOf")) result.rollbackOf = Number(release.rollbackOf);
  const created = fromTimestamp(release.createdAt);
  if (created) result.createdAt = created;
  return result;
}

export function toAppendResult(reply: Wire): AppendResult {
  return { firstSeq: Number(reply.firstSeq), lastSeq: Number(reply.lastSeq), replayed: Boolean(reply.replayed) };
}

export function toVerification(reply: Wire): Verification {
  const result: Verification = {
    ok: Boolean(reply.ok),
    verifiedEvents: Number(reply.verifiedEvents ?? 0),
    eventsDigest: reply.eventsDigest ?? "",
    reason: reply.reason ?? "",
  };
  if (present(reply, "firstBrokenSeq")) result.firstBrokenSeq = Number(reply.firstBrokenSeq);
  return result;
}
