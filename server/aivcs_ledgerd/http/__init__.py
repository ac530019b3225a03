"""The daemon's HTTP side: a JSON API transcoding to the ledger's RPCs, a live feed, and a web console.

server.py   the port: binding, TLS, lifecycle on the daemon's loop
routes.py   the JSON API routes (google.api.http convention)
jsonmap.py  query/body to request messages, messages to proto3 JSON
live.py     a run's events as Server-Sent Events
auth.py     bearer tokens, roles, cross-origin write refusal
errors.py   gRPC codes to HTTP statuses, JSON error bodies
console.py  the console's static files and security headers
"""

from aivcs_ledgerd.http.server import HttpServer

__all__ = ["HttpServer"]
