"""What the tests and the benchmarks share: daemons to run, faults to inject, data to send, figures to read.

Not part of the daemon's wheel (setuptools finds packages under server/ only);
importable from a clone because pytest and `python -m bench` run from its root.

    daemon.py       the daemon as a subprocess on a free loopback port (start_daemon, DaemonProcess)
    supervisor.py   the daemon killed and restarted on one storage folder (Supervisor, Connection)
    inprocess.py    the daemon inside the test's event loop (running, channel, Stubs)
    faults.py       faults at an in-process daemon's store boundary (StoreFaults)
    replicas.py     several daemons on one SurrealDB server: writers, checks, subscription lag
    surrealdb_stand_in.py  a stand-in SurrealDB server (`python -m harness.surrealdb_stand_in`)
    httpd.py        the daemon with --http-listen, and a small HTTP/JSON client
    browser.py      Debian's chromium as Playwright drives it
    pki.py          certificates for TLS and mutual TLS
    proc.py         RSS, descriptors, threads and CPU time from /proc
    metrics.py      the Prometheus endpoint, parsed
    codes.py        status codes: forbidden, transient
    expect.py       fails(code, *words): a refusal, named
    wire.py         protobuf bytes by hand, for messages the runtime will not build
    data.py         spec digests, unique ids, a fresh run
    crash.py, soak.py, hostile.py, flood.py   the reliability campaigns and the memory flood:
                    short in tests/, long in bench/
"""
