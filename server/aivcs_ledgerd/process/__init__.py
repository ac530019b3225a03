"""The process: command line, start-up and shutdown, logging, and the ports beside gRPC.

cli.py           the `aivcs-ledgerd` command: flags, environment, exit codes
app.py           lifecycle: open the database, serve, drain on a signal
operations.py    wires TLS, tokens, limits, metrics, call logs and probes around the servicers
metrics_http.py  the HTTP endpoint Prometheus scrapes
logs.py          log set-up (plain or JSON lines); stderr_relay.py: stderr as JSON lines
fdlimit.py       open-file limits; repair.py: `aivcs-ledgerd repair`
"""
