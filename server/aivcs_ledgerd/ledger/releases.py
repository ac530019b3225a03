"""The release registry's rules: promote, roll back, read the history.

An agent's history is append-only and the newest entry is current. Rollback
re-appends history[1] (the entry before the current one), so a second
rollback returns to where the first started, as `kubectl rollout undo` does.

Every append of one agent holds that agent's lock on the database handle and
is one transaction that re-reads the head (see store/releases.py), so two
concurrent rollbacks never both pick the same "previous". When daemons share
a SurrealDB server the record id `releases:[agent, sequence]` is the guard:
the slower of two appends on the same head fails on the existing record and
is retried here against the new head, with its expectations checked again.
Several replicas on one server go further: an agent's appends are made by the
replica holding the agent's lease (ledger/ownership.py), fenced by its epoch,
so they never overlap across replicas either; the others forward them.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable

from aivcs_ledgerd.ledger import validation
from aivcs_ledgerd.ledger.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from aivcs_ledgerd.ledger.ownership import SoleOwner
from aivcs_ledgerd.ledger.pages import within_bytes
from aivcs_ledgerd.ledger.store_errors import translated
from aivcs_ledgerd.model import Page, Release
from aivcs_ledgerd.store import Database, DuplicateRecord, Rejected, StoreConflict
from aivcs_ledgerd.store import releases as store
from aivcs_ledgerd.store.database import Queries
from aivcs_ledgerd.store.leases import Fence

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
# Appends lost to a concurrent daemon's (duplicate sequence or write
# conflict) are retried this many times in all before the caller gets ABORTED.
ATTEMPTS = 5
# A token holds an agent_name (at most 256 bytes) and a number: never this long.
MAX_TOKEN_CHARS = 1024


class Releases:
    """Each agent's release history over one database handle.

    Callers pass validated values: digests as 64 lowercase hex characters,
    non-empty agent_name and promoted_by (the servicer checks them).
    """

    def __init__(self, db: Database, ownership: SoleOwner | None = None) -> None:
        self.db = db
        self._ownership = ownership or SoleOwner()

    async def _fenced(self, agent_name: str, append: Callable[[Queries, Fence | None], Awaitable[Release]]) -> Release:
        return await self._ownership.fenced_write(self.db, store.lock_key(agent_name), append)

    @translated
    async def promote(
        self,
        agent_name: str,
        spec_digest: str,
        promoted_by: str,
        *,
        version_label: str | None = None,
        notes: str | None = None,
        expected_current_spec_digest: str | None = None,
        require_successful_run: bool = False,
    ) -> Release:
        """Append a release that becomes current.

        `expected_current_spec_digest` is compare-and-set: "" requires that
        the agent has no release yet. `require_successful_run` refuses the
        promotion unless a COMPLETED, successful run of this spec by this
        agent is in the ledger.
        """
        agent_name = validation.identifier("agent_name", agent_name)
        spec_digest = validation.digest("spec_digest", spec_digest)
        promoted_by = validation.identifier("promoted_by", promoted_by)
        version_label = validation.optional_text("version_label", version_label, validation.MAX_LABEL_BYTES)
        notes = validation.optional_text("notes", notes, validation.MAX_NOTES_BYTES)
        expected_current_spec_digest = validation.expected_digest(
            "expected_current_spec_digest", expected_current_spec_digest
        )
        for _ in range(ATTEMPTS):
            try:
                return await self._fenced(
                    agent_name,
                    lambda session, fence: store.promote(
                        session,
                        agent_name,
                        spec_digest,
                        version_label,
                        promoted_by,
                        notes,
                        expected_current_spec_digest,
                        require_successful_run,
                        fence,
                    ),
                )
            except Rejected as rejected:
                raise _refusal(rejected.reason, agent_name, spec_digest, expected_current_spec_digest) from None
            except (DuplicateRecord, StoreConflict):
                continue
        raise _contended(agent_name)

    @translated
    async def rollback(
        self,
        agent_name: str,
        promoted_by: str,
        *,
        to_spec_digest: str | None = None,
        expected_current_spec_digest: str | None = None,
        notes: str | None = None,
    ) -> Release:
        """Re-append history[1], or the newest earlier entry with `to_spec_digest`.

        The new entry copies the re-appended one's spec_digest and
        version_label, and its notes unless `notes` is given.
        """
        agent_name = validation.identifier("agent_name", agent_name)
        promoted_by = validation.identifier("promoted_by", promoted_by)
        to_spec_digest = validation.optional_digest("to_spec_digest", to_spec_digest)
        expected_current_spec_digest = validation.expected_digest(
            "expected_current_spec_digest", expected_current_spec_digest
        )
        notes = validation.optional_text("notes", notes, validation.MAX_NOTES_BYTES)
        for _ in range(ATTEMPTS):
            try:
                return await self._fenced(
                    agent_name,
                    lambda session, fence: store.rollback(
                        session, agent_name, promoted_by, to_spec_digest, expected_current_spec_digest, notes, fence
                    ),
                )
            except Rejected as rejected:
                raise _refusal(rejected.reason, agent_name, to_spec_digest, expected_current_spec_digest) from None
            except (DuplicateRecord, StoreConflict):
                continue
        raise _contended(agent_name)

    @translated
    async def current(self, agent_name: str) -> Release:
        """The agent's newest entry; NotFound when it has none."""
        agent_name = validation.identifier("agent_name", agent_name)
        release = await store.current(self.db, agent_name)
        if release is None:
            raise NotFound(
                f"agent_name: agent {agent_name!r} has no release",
                reason="NO_RELEASE",
                facts={"agent_name": agent_name},
            )
        return release

    @translated
    async def history(
        self,
        agent_name: str,
        page_size: int = 0,
        page_token: str = "",
        size_of: Callable[[Release], int] | None = None,
    ) -> Page:
        """A keyset page of the history, newest first.

        `next_cursor` is the token of the next page, None on the last. The
        token holds the sequence the next page starts below, so entries
        appended meanwhile neither shift nor repeat what later pages hold.
        """
        agent_name = validation.identifier("agent_name", agent_name)
        if page_size < 0:
            raise InvalidArgument("page_size", f"must not be negative, got {page_size}")
        size = DEFAULT_PAGE_SIZE if page_size == 0 else min(page_size, MAX_PAGE_SIZE)
        before = decode_token(page_token, agent_name) if page_token else None
        items = await store.history(self.db, agent_name, before, size)
        if size_of is not None:
            items = within_bytes(items, size_of)  # at most PAGE_BYTES; the rest is on the next page
        more = bool(items) and items[-1].sequence > 1
        return Page(items, encode_token(items[-1].sequence, agent_name) if more else None)


def _refusal(reason: str, agent_name: str, digest: str | None, expected: str | None) -> Exception:
    kind, _, detail = reason.partition(":")
    if kind == store.NOT_FOUND:
        return NotFound(
            f"agent_name: agent {agent_name!r} has no release to roll back",
            reason="NO_RELEASE",
            facts={"agent_name": agent_name},
        )
    if kind == store.ABORTED:
        return Aborted(
            f"expected_current_spec_digest: the current release of agent {agent_name!r} is "
            f"{_describe(detail)}, not {_describe(expected or '')}; nothing was written",
            reason="CURRENT_RELEASE_MISMATCH",
            facts={"agent_name": agent_name, "current_spec_digest": detail},
        )
    if kind == store.NOTHING_BEFORE:
        return FailedPrecondition(f"agent {agent_name!r} has a single release; there is nothing to roll back to")
    if kind == store.NO_SUCH_DIGEST:
        return FailedPrecondition(
            f"to_spec_digest: agent {agent_name!r} has no release of spec_digest {digest} before its current one"
        )
    if kind == store.NO_SUCCESSFUL_RUN:
        return FailedPrecondition(
            f"require_successful_run: no COMPLETED, successful run of spec_digest {digest} "
            f"by agent {agent_name!r} is in the ledger"
        )
    return FailedPrecondition(f"agent {agent_name!r}: {reason}")


def _describe(digest: str) -> str:
    return f"spec_digest {digest}" if digest else '"" (no release yet)'


def _contended(agent_name: str) -> Aborted:
    return Aborted(
        f"agent {agent_name!r}: other writers appended to the release history {ATTEMPTS} times "
        "while this call tried; nothing was written, retry"
    )


def encode_token(before: int, agent_name: str) -> str:
    """An opaque page token: the sequence the next page starts below, for this agent only."""
    raw = json.dumps({"before": before, "agent": agent_name}, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, agent_name: str) -> int:
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidArgument("page_token", "is not a token this daemon issued")
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        before, agent = data["before"], data["agent"]
    except (ValueError, KeyError, TypeError, IndexError, RecursionError, binascii.Error):
        raise InvalidArgument("page_token", "is not a token this daemon issued") from None
    if type(before) is not int or not 2 <= before <= store.MAX_SEQUENCE:
        raise InvalidArgument("page_token", "is not a token this daemon issued")
    if agent != agent_name:
        raise InvalidArgument("page_token", "was issued for another agent_name; start again without a token")
    return before
