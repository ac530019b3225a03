"""Under `--log-json`, everything the daemon writes to stderr reaches it as JSON lines.

gRPC core (C++, absl logging) and the embedded engine (Rust) write straight
to file descriptor 2 in formats of their own, e.g. `E1201 08:58:37.408767
8105 add_port.cc:83] Failed to add port …` or `thread '…' panicked at …`.
Neither can be reached from Python: GRPC_VERBOSITY only chooses how much
gRPC core writes (silencing it would hide its errors), grpcio offers no hook
to install an absl log sink, and the engine has no logging setting at all.
What does hold for every writer is the descriptor, so `start` points fd 2
at a pipe and a relay reads it and writes one JSON object per line to the
real stderr: the daemon's own JSON lines unchanged, gRPC core's lines as
`logger` "grpc" with their level, source and message, anything else as
`logger` "stderr".

The relay is a process, not a thread of the daemon: a thread dies with the
daemon, and what is still in the pipe then, often the one line that says
why it crashed (a panic, a fatal error), would be lost. The relay reads
until the last writer has gone, which is after a crash too. It ignores
SIGINT and SIGTERM (a Ctrl-C reaches the whole process group) and ends at
end of input; on a normal exit `stop` hands fd 2 back and waits for it, so
that the daemon's last line is written when its exit is seen. Being the only
writer to the real stderr, it also keeps long lines of different writers
from interleaving.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime
from typing import Any, TextIO

# absl's prefix: severity letter, MMDD, time, thread id, file:line, "] ".
_ABSL = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ ([^\]\s]+:\d+)\] ?(.*)$")
_LEVELS = {"I": "INFO", "W": "WARNING", "E": "ERROR", "F": "CRITICAL"}
STOP_SECONDS = 5.0


class Relay:
    """The running relay and the daemon's real stderr, kept to hand back.

    Should the relay end while the daemon runs (killed, say), a watcher
    thread gives fd 2 back to the real stderr at once: plain lines from then
    on rather than none.
    """

    def __init__(self, process: subprocess.Popen[bytes], real_stderr: int) -> None:
        self.process = process
        self.real_stderr = real_stderr
        self._lock = threading.Lock()
        self._restored = False
        threading.Thread(target=self._watch, name="stderr-relay-watch", daemon=True).start()

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Give fd 2 back to the real stderr, which closes the pipe, and wait for the relay to write the rest."""
        self._restore()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def _restore(self) -> bool:
        with self._lock:
            if self._restored:
                return False
            self._restored = True
            sys.stderr.flush()
            os.dup2(self.real_stderr, 2)
            os.close(self.real_stderr)
            return True

    def _watch(self) -> None:
        code = self.process.wait()
        if self._restore():
            logging.getLogger(__name__).warning("the stderr relay ended (exit %s): stderr is written directly", code)


_relay: Relay | None = None


def start() -> Relay:
    """Route fd 2 through a relay that writes JSON lines to the present stderr."""
    global _relay
    if _relay is not None:
        return _relay
    real_stderr = os.dup(2)
    reader, writer = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-P", "-m", "aivcs_ledgerd.process.stderr_relay"],  # -P: not from the working directory
        stdin=reader,
        stdout=real_stderr,
        stderr=real_stderr,
    )
    os.close(reader)
    sys.stderr.flush()
    os.dup2(writer, 2)
    os.close(writer)
    _relay = Relay(process, real_stderr)
    return _relay


def stop() -> None:
    """Stop the relay `start` began, if any."""
    global _relay
    if _relay is not None:
        _relay.stop()
        _relay = None


def as_json(line: str) -> str:
    """One stderr line as a JSON object: a JSON object unchanged, an absl line parsed, anything else wrapped."""
    if line.startswith("{"):
        try:
            if isinstance(json.loads(line), dict):
                return line
        except ValueError:
            pass
    entry: dict[str, Any] = {"time": datetime.now(UTC).isoformat()}
    match = _ABSL.match(line)
    if match is not None:
        entry |= {"level": _LEVELS[match[1]], "logger": "grpc", "source": match[2], "message": match[3]}
    else:
        entry |= {"level": "WARNING", "logger": "stderr", "message": line}
    return json.dumps(entry, ensure_ascii=False)


def relay(source: TextIO, sink: TextIO) -> None:
    for raw in source:
        line = raw.rstrip("\r\n")
        if line.strip():
            sink.write(as_json(line) + "\n")
            sink.flush()


def main() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    with (
        open(sys.stdin.fileno(), encoding="utf-8", errors="replace", closefd=False) as source,
        open(sys.stdout.fileno(), "w", encoding="utf-8", errors="replace", closefd=False) as sink,
    ):
        relay(source, sink)


if __name__ == "__main__":
    main()
