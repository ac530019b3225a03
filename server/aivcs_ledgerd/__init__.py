"""aivcs-ledgerd: the gRPC ledger daemon for AI agent runs, events and releases.

Its parts, each a package; a layer imports only those below it (tests/test_layers.py):

process/     the command, start-up and shutdown; wires everything below
http/        the JSON API and the web console        } the ways in: each turns
otlp/        OTLP trace ingestion                     } requests into calls on
transport/   the gRPC servicers, forwarding to owners } the ledger
middleware/  what wraps every gRPC call: tokens, limits, metrics, call log
upkeep/      background care of the engine: checkpoints, memory, health
ledger/      the rules: runs, seqs, idempotency, releases, run ownership
store/       SurrealDB: the handle, the schema, the queries
util/        small helpers with no domain knowledge

and three modules shared by all: model.py (plain values), methods.py (every
RPC path) and config.py (the settings value).
"""

__version__ = "0.1.0"
