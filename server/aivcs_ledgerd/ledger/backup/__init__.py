"""Backup and restore of a ledger through the daemon: the dump format, dumping online, restoring checked."""
