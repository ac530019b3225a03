import { join } from "node:path";
import { status, type Metadata, type ServiceError } from "@grpc/grpc-js";
import protobuf from "protobufjs";
import { findProtoRoot } from "./protos.js";

/** gRPC status codes by name, e.g. `Code.NOT_FOUND === 5`. */
export const Code = status;

const NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(status)
    .filter(([, value]) => typeof value === "number")
    .map(([name, value]) => [value as number, name]),
);

/** The google.rpc.ErrorInfo of a refusal (proto/aivcs/ledger/v1/errors.proto lists the reasons). */
export interface ErrorInfo {
  reason: string;
  domain: string;
  metadata: Record<string, string>;
}

/**
 * A call the daemon refused or could not answer. `code` is the numeric gRPC
 * status, `codeName` its name ("NOT_FOUND"), `message` the daemon's words,
 * which name the field at fault. `reason` (e.g.
 * "ERROR_REASON_LAST_SEQ_MISMATCH", "" when none) and `metadata` are the
 * refusal's structured details: act on them, not on the message.
 */
export class LedgerError extends Error {
  readonly code: number;
  readonly codeName: string;
  readonly details: string;
  readonly reason: string;
  readonly metadata: Record<string, string>;

  constructor(code: number, details: string, info?: ErrorInfo) {
    const codeName = NAMES[code] ?? `CODE_${code}`;
    super(`${details} (${codeName})`);
    this.name = "LedgerError";
    this.code = code;
    this.codeName = codeName;
    this.details = details;
    this.reason = info?.reason ?? "";
    this.metadata = info?.metadata ?? {};
  }

  /** For an expectedLastSeq mismatch: the run's last seq when the batch was refused. */
  get lastSeq(): number | undefined {
    const value = this.metadata.last_seq;
    return value === undefined ? undefined : Number(value);
  }

  /** For a refusal because the run is terminal: its status, e.g. "failed". */
  get runStatus(): string | undefined {
    const value = this.metadata.status;
    return value === undefined ? undefined : value.replace(/^RUN_STATUS_/, "").toLowerCase();
  }

  /** True when the same call may succeed later: the daemon restarted or lost its database for a moment. */
  get retryable(): boolean {
    return this.code === status.UNAVAILABLE;
  }
}

export function isServiceError(error: unknown): error is ServiceError {
  return typeof error === "object" && error !== null && "code" in error && "details" in error;
}

const DETAILS_KEY = "grpc-status-details-bin";
const ERROR_INFO_URL = "type.googleapis.com/google.rpc.ErrorInfo";
let codecs: { status: protobuf.Type; info: protobuf.Type } | undefined;

/** The ErrorInfo in a call's google.rpc.Status trailer, if the daemon sent one. */
export function errorInfo(metadata: Metadata | undefined): ErrorInfo | undefined {
  const raw = metadata?.get(DETAILS_KEY)[0];
  if (!(raw instanceof Buffer)) return undefined;
  try {
    if (!codecs) {
      const root = new protobuf.Root();
      const protoRoot = findProtoRoot();
      root.resolvePath = (_origin, target) => join(protoRoot, target); // google/protobuf/* are bundled
      root.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"]);
      codecs = { status: root.lookupType("google.rpc.Status"), info: root.lookupType("google.rpc.ErrorInfo") };
    }
    const decoded = codecs.status.toObject(codecs.status.decode(raw)) as {
      details?: { type_url?: string; typeUrl?: string; value: Uint8Array }[];
    };
    // protobufjs's bundled google.protobuf.Any keeps the proto's field names (type_url).
    const packed = decoded.details?.find((detail) => (detail.type_url ?? detail.typeUrl) === ERROR_INFO_URL);
    if (!packed) return undefined;
    const info = codecs.info.toObject(codecs.info.decode(packed.value), { defaults: true }) as ErrorInfo;
    return { reason: info.reason, domain: info.domain, metadata: { ...info.metadata } };
  } catch {
    return undefined; // details that do not decode leave the code and message as they are
  }
}

/** Turns anything a call threw into a LedgerError (other errors pass through). */
export function toLedgerError(error: unknown): unknown {
  if (error instanceof LedgerError) return error;
  if (isServiceError(error)) {
    return new LedgerError(error.code, error.details || error.message, errorInfo(error.metadata));
  }
  return error;
}
