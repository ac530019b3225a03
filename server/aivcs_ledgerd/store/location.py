"""Where the data goes: `--db` checked and, for a durable embedded engine, made absolute.

The engine takes `surrealkv://PATH` (and `file://PATH`) literally: a
relative PATH is relative to the working directory, `~` is a folder named
`~`, and an empty PATH is the working directory itself. `resolve` makes a
durable URL name one absolute folder, so the daemon's log says exactly
where the data is, expands `~` as a shell would, and refuses what would
scatter the engine's files into the working directory, and bare paths
(`--db ./mydata`), with the URL that was probably meant.
"""

from __future__ import annotations

import os

from aivcs_ledgerd.store.database import (
    EMBEDDED_SCHEMES,
    REMOTE_SCHEMES,
    SURREALKV_SCHEMES,
    UnsupportedScheme,
    check_url,
)


def resolve(url: str, flag: str = "--db") -> str:
    """`url` with a durable embedded engine's folder made absolute; UnsupportedScheme naming `flag` if unusable."""
    if "://" not in url and url.lower() not in EMBEDDED_SCHEMES | REMOTE_SCHEMES:
        raise UnsupportedScheme(
            f"{flag} {url!r} is not a database URL; for a data folder there write surrealkv://{url}, "
            "for a server ws://HOST:PORT"
        )
    scheme = check_url(url)
    if scheme not in SURREALKV_SCHEMES:
        return url
    path = url.split("://", 1)[1]
    if not path.strip():
        raise UnsupportedScheme(
            f"{flag} {url!r} names no folder; give one, e.g. {scheme}://aivcs-ledger-data "
            f"(relative to the working directory) or {scheme}:///var/lib/aivcs-ledger"
        )
    folder = os.path.expanduser(path)
    if folder.startswith("~"):
        raise UnsupportedScheme(f"{flag} {url!r}: cannot expand {folder.split('/')[0]!r} (no such user or HOME)")
    return f"{scheme}://{os.path.abspath(folder)}"
