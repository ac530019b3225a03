"""`python -m bench.reliability`: kill the daemon, soak it, feed it garbage, and count what survived.

The long versions of tests/test_crash.py, tests/test_soak.py and
tests/test_hostile.py, with the same engines (harness/crash.py,
harness/soak.py, harness/hostile.py) and the same invariants:

    python -m bench.reliability --kills 200 --soak-seconds 300 --hostile-examples 500

Crash campaign: the daemon runs on durable `surrealkv://` storage in a
temporary folder; several clients (unary appends and IngestEvents streams)
write into several shared runs with an idempotency key per batch (content and
key depend only on the client and the batch number) and record every
acknowledgement. The daemon is killed with SIGKILL at random moments (some
while it is still opening and recovering its storage) and restarted on the
same folder on a new port; clients reconnect and retry every unacknowledged
batch, same key, same content. At the end every run is read back: every
acknowledged event stored exactly once at the seqs its acknowledgement
names, seqs 1..N without a gap, every batch whole or absent, VerifyRun ok,
and a second send of acknowledged batches is a replay with the same seqs.

Soak: mixed traffic against one daemon while its RSS and open file
descriptors are sampled from /proc; both must stay within a bound after a
warm-up. Hostile: the property tests of tests/test_hostile.py with more
examples. The exit status is 0 only when every invariant held.

One module per campaign (crash.py, soak.py, hostile.py: run it, print its
figures); __main__.py is the command.
"""


def say(*parts: object) -> None:
    print(*parts, flush=True)
