"""`python -m bench`: the daemon's figures against measured ceilings.

One invocation measures what this machine allows (a gRPC server that stores
nothing, and the embedded SurrealDB engine driven directly from Python),
then the real daemon on durable storage, and prints each figure with its
ceiling, the ratio and the target. Each module has one job:

    sizes          how much work each mode (full, --quick, --smoke) does
    workload       the one event shape every measurement sends
    stats          rates and percentiles
    loads          client work, run inside client processes
    clients        the pool of client processes that runs it in step
    null_server    the no-storage EventStream server (its own process)
    servers        starting the null server and the daemon; their RSS
    engine         the direct-engine insert and read ceilings
    daemon_figures the daemon's figures and scale checks
    profile        optional py-spy sampling of the daemon per figure
    report         the table, the targets and the JSON

`python -m bench.flood_memory` is a separate command: the daemon's
memory under an ingest flood.
"""
