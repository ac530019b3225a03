"""Open-file limits: raise the soft limit at start, and notice when the process is about to run out.

Every connection is a file descriptor, and so are the embedded engine's
files and the /proc entries it keeps per thread. At the soft limit gRPC
stops accepting connections (it logs "File descriptor limit reached") while
the daemon otherwise looks healthy. So the daemon raises its soft limit to
the hard limit at start (capped at MAX_SOFT_LIMIT), and health reports
NOT_SERVING while the descriptors in use come within RESERVE of the limit.
"""

from __future__ import annotations

import errno
import logging
import os
import resource

log = logging.getLogger(__name__)

MAX_SOFT_LIMIT = 1 << 20
RESERVE = 16  # descriptors kept free: below this many, accepting connections fails soon


def raise_soft_limit() -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit as far as the hard limit allows; (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = MAX_SOFT_LIMIT if hard == resource.RLIM_INFINITY else min(hard, MAX_SOFT_LIMIT)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as error:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, error)
            return soft, soft
        log.info("raised the open-file limit (RLIMIT_NOFILE) from %d to %d", soft, target)
        return soft, target
    return soft, soft


def descriptors_in_use(soft: int) -> int | None:
    """Open file descriptors of this process, where /proc tells (Linux); `soft` when none is left to look."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError as error:
        return soft if error.errno in (errno.EMFILE, errno.ENFILE) else None


def exhaustion() -> str | None:
    """Why new connections would fail for want of file descriptors, or None."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    used = descriptors_in_use(soft)
    if used is None or used < soft - RESERVE:
        return None
    return f"{used} of {soft} file descriptors in use (RLIMIT_NOFILE): new connections are refused"
