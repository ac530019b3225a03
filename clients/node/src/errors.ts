import { status, type ServiceError } from "@grpc/grpc-js";

/** gRPC status codes by name, e.g. `Code.NOT_FOUND === 5`. */
export const Code = status;

const NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(status)
    .filter(([, value]) => typeof value === "number")
    .map(([name, value]) => [value as number, name]),
);

/**
 * A call the daemon refused or could not answer. `code` is the numeric gRPC
 * status, `codeName` its name ("NOT_FOUND"), `message` the daemon's words,
 * which name the field at fault.
 */
export class LedgerError extends Error {
  readonly code: number;
  readonly codeName: string;
  readonly details: string;

  constructor(code: number, details: string) {
    const codeName = NAMES[code] ?? `CODE_${code}`;
    super(`${details} (${codeName})`);
    this.name = "LedgerError";
    this.code = code;
    this.codeName = codeName;
    this.details = details;
  }

  /** True when the same call may succeed later: the daemon restarted or lost its database for a moment. */
  get retryable(): boolean {
    return this.code === status.UNAVAILABLE;
  }
}

export function isServiceError(error: unknown): error is ServiceError {
  return typeof error === "object" && error !== null && "code" in error && "details" in error;
}

/** Turns anything a call threw into a LedgerError (other errors pass through). */
export function toLedgerError(error: unknown): unknown {
  if (error instanceof LedgerError) return error;
  if (isServiceError(error)) return new LedgerError(error.code, error.details || error.message);
  return error;
}
