// Between the plain objects @grpc/proto-loader decodes and the client's types.
// Struct and Timestamp are the only well-known types the contract uses.
import type { AppendResult, Evaluation, Json, JsonObject, LedgerEvent, Release, Run, RunStatus } from "./types.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Wire = any;

export function toValue(value: Json): Wire {
  if (value === null) return { nullValue: "NULL_VALUE" };
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new TypeError(`${value} has no JSON form`);
    return { numberValue: value };
  }
  if (typeof value === "string") return { stringValue: value };
  if (typeof value === "boolean") return { boolValue: value };
  if (Array.isArray(value)) return { listValue: { values: value.map(toValue) } };
  if (typeof value === "object") return { structValue: toStruct(value) };
  throw new TypeError(`${typeof value} is not a JSON value`);
}

export function toStruct(object: JsonObject): Wire {
  const fields: Record<string, Wire> = {};
  for (const [key, value] of Object.entries(object)) {
    if (value !== undefined) fields[key] = toValue(value);
  }
  return { fields };
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
