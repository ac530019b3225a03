"""aivcs-ledgerd: the gRPC ledger daemon for AI agent runs, events and releases."""

__version__ = "0.1.0"
