export { LedgerClient, DEFAULT_TARGET, type ClientOptions, type Logger, type TlsOptions } from "./client.js";
export { RunRecorder, type RecorderOptions } from "./recorder.js";
export { LedgerError, Code, type ErrorInfo } from "./errors.js";
export { reasonText, MAX_REASON_BYTES } from "./convert.js";
export { findProtoRoot, loadServices } from "./protos.js";
export type * from "./types.js";
