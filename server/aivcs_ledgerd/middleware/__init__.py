"""gRPC middleware: what wraps every call before and after a servicer runs.

interceptors.py  naming a call, wrapping its handler with hooks
security.py      TLS credentials, bearer tokens and roles
connections.py   per-connection limits: concurrent calls, in-flight appends
budget.py        the daemon-wide budget of request bytes in flight
metrics.py       Prometheus metrics per RPC, per append, of the database
calllog.py       one log line per notable call
"""
