"""gRPC status codes by their number, as IngestError.code and google.rpc.Status carry them."""

from __future__ import annotations

import grpc

CODES_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}
