"""`python -m aivcs.ledger` is the `aivcs-ledger` command."""

from aivcs.ledger.cli import main

main()
