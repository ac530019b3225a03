"""Python access to the AIVCS ledger daemon. Generated stubs live in `aivcs.ledger.v1`."""
