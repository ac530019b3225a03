import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const FILES = [
  "aivcs/ledger/v1/run_ledger.proto",
  "aivcs/ledger/v1/event_stream.proto",
  "aivcs/ledger/v1/release_registry.proto",
];

/**
 * Where the .proto files are: $AIVCS_LEDGER_PROTO_ROOT, the package's own
 * copy (a published package), or the repository's proto/ (development).
 */
export function findProtoRoot(): string {
  const candidates = [
    process.env.AIVCS_LEDGER_PROTO_ROOT,
    fileURLToPath(new URL("../../proto/", import.meta.url)),
    fileURLToPath(new URL("../../../../proto/", import.meta.url)),
  ].filter((path): path is string => Boolean(path));
  for (const root of candidates) {
    if (existsSync(join(root, FILES[0]!))) return root;
  }
  throw new Error(`cannot find the ledger protos; looked in ${candidates.join(", ")} (set AIVCS_LEDGER_PROTO_ROOT)`);
}

export type ServiceConstructor = grpc.ServiceClientConstructor;

export interface LedgerServices {
  RunLedger: ServiceConstructor;
  EventStream: ServiceConstructor;
  ReleaseRegistry: ServiceConstructor;
}

let cached: LedgerServices | undefined;

/** Loads the services once per process, straight from the .proto files (no generated code). */
export function loadServices(protoRoot?: string): LedgerServices {
  if (cached && !protoRoot) return cached;
  const definition = protoLoader.loadSync(FILES, {
    includeDirs: [protoRoot ?? findProtoRoot()],
    keepCase: false, // run_id -> runId
    longs: Number, // seqs and counts as numbers: exact up to 2^53
    enums: String, // "RUN_STATUS_COMPLETED"
    defaults: true,
    oneofs: true, // Struct values and proto3 `optional` tell which field is set
  });
  const loaded = grpc.loadPackageDefinition(definition) as unknown as {
    aivcs: { ledger: { v1: LedgerServices } };
  };
  const services = loaded.aivcs.ledger.v1;
  if (!protoRoot) cached = services;
  return services;
}
