"""Generated from proto/aivcs/ledger/v1 by tools/generate_protos.py. Do not edit."""
