"""The write-ahead log of an embedded SurrealKV store, checked before the engine opens it.

SurrealKV 0.21.4 (in surrealdb-embedded 3.0.0b10), on meeting any bad
record while replaying its log, keeps the records before it and drops the
rest of the segment without a word: a flipped byte in the middle of the log
loses every transaction written after it, and the store opens as if
nothing happened. A crash mid-write leaves a bad record too, but only as
the last thing in the log (a torn tail, never acknowledged). So the daemon
reads the log first and tells the two apart:

- torn tail (an incomplete or bad last record, nothing valid after it):
  cut off here, in place (a truncate needs no free space; the engine's
  own repair copies the segment and fails on a full disk);
- damage in the middle (a bad record followed by valid ones): refuse to
  open (StoreDamaged); `aivcs-ledgerd repair` cuts the log at the damage
  explicitly and reports what was lost.

The format (LevelDB's log format, SurrealKV src/wal): 32 KiB blocks; each
physical record is a 7-byte header (CRC-32 of type and payload, big-endian;
payload length, big-endian u16; type) and its payload. Types: 0 padding, 1
full, 2 first, 3 middle, 4 last fragment of a record, 9 compression
setting. Fewer than 7 bytes left in a block are zero padding. One logical
record is one committed engine batch: version byte 1, varint sequence
number, varint entry count, then per entry kind, varint key length, key,
varint value length, value, varint timestamp.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

BLOCK_SIZE = 32 * 1024
HEADER_SIZE = 7
PADDING, FULL, FIRST, MIDDLE, LAST, COMPRESSION = 0, 1, 2, 3, 4, 9
_HEADER = struct.Struct(">IHB")
# How far past a bad record to look, byte by byte, for a valid one that lost its block alignment
# (an engine write cut short by a full disk shifts everything written after it).
_SHIFTED_SEARCH_BYTES = 2 * BLOCK_SIZE


@dataclass(frozen=True, slots=True)
class Segment:
    """What the scan found in one segment file."""

    path: Path
    size: int
    records: int  # complete records before the first problem
    good_end: int  # where the valid prefix ends: the start of the first bad or incomplete record
    problem: str | None = None  # what is wrong at good_end, None when the segment is sound
    problem_at: int = 0  # offset of the physical record that failed
    valid_after: int = 0  # valid records found after the problem (0: a torn tail)

    @property
    def torn(self) -> bool:
        return self.problem is not None and self.valid_after == 0

    @property
    def damaged(self) -> bool:
        return self.problem is not None and self.valid_after > 0

    def describe(self) -> str:
        return (
            f"{self.path.name}: {self.problem} at offset {self.problem_at}; {self.records} records "
            f"({self.good_end} bytes) before it are sound, {self.size - self.good_end} bytes from offset "
            f"{self.good_end} on would be dropped, {self.valid_after} valid records among them"
        )


@dataclass(slots=True)
class Loss:
    """What cutting the log at the damage drops, as far as the dropped records can be read."""

    bytes: int = 0
    records: int = 0  # whole engine batches (transactions) that could be read back
    unreadable_bytes: int = 0
    events_by_run: Counter[str] = field(default_factory=Counter)  # run_events records written
    runs_written: set[str] = field(default_factory=set)  # runs records written (created or changed)
    other_records: int = 0


def segments(folder: Path) -> list[Path]:
    """The segment files of the log in `folder`, oldest first."""
    try:
        names = [entry.name for entry in os.scandir(folder) if entry.is_file() and entry.name.endswith(".wal")]
    except FileNotFoundError:
        return []
    return [
        folder / name
        for name in sorted(names, key=lambda name: int(name.split(".")[0]) if name.split(".")[0].isdigit() else -1)
    ]


def scan_segment(path: Path) -> Segment:
    data = path.read_bytes()
    records, good_end, problem, problem_at = _parse(data, 0)
    if problem is None:
        return Segment(path, len(data), records, good_end)
    valid_after = _valid_after(data, problem_at)
    return Segment(path, len(data), records, good_end, problem, problem_at, valid_after)


def scan(folder: Path) -> list[Segment]:
    return [scan_segment(path) for path in segments(folder)]


def check(folder: Path) -> tuple[list[Segment], list[Segment]]:
    """(torn, damaged) segments of the log in `folder`.

    A segment with a bad record is damaged, not torn, when valid records follow the bad one in it,
    or when a later segment holds any record at all.
    """
    found = scan(folder)
    torn: list[Segment] = []
    damaged: list[Segment] = []
    for index, segment in enumerate(found):
        if segment.problem is None:
            continue
        later = any(other.records or other.valid_after for other in found[index + 1 :])
        (damaged if segment.damaged or later else torn).append(segment)
    return torn, damaged


def cut(segment: Segment) -> int:
    """Truncate a segment at the end of its valid prefix; return the bytes dropped."""
    dropped = segment.size - segment.good_end
    with segment.path.open("r+b") as file:
        file.truncate(segment.good_end)
        file.flush()
        os.fsync(file.fileno())
    return dropped


def loss(data: bytes, start: int) -> Loss:
    """What the bytes of a segment from `start` on hold, read as well as damage allows."""
    lost = Loss(bytes=len(data) - start)
    readable = 0
    for payload, length in _salvage(data, start):
        readable += length
        lost.records += 1
        for key in _batch_keys(payload):
            _account(lost, key)
    lost.unreadable_bytes = max(0, lost.bytes - readable)
    return lost


def _parse(data: bytes, start: int) -> tuple[int, int, str | None, int]:
    """(records, good_end, problem, problem_at) of a sequential read from `start`, as the engine reads."""
    size = len(data)
    offset = start
    records = 0
    good_end = start
    in_record = False
    while True:
        left = BLOCK_SIZE - offset % BLOCK_SIZE
        if left < HEADER_SIZE:
            offset += left  # zero padding at a block's end
            continue
        if offset >= size:
            if in_record:  # its fragments so far are sound: the problem is where they stop, at the end
                return records, good_end, "record cut short at the end of the segment", size
            return records, good_end, None, 0
        if offset + HEADER_SIZE > size:
            return records, good_end, "record header cut short at the end of the segment", offset
        crc, length, kind = _HEADER.unpack_from(data, offset)
        room = min(left, size - offset) - HEADER_SIZE
        if kind == PADDING:
            return records, good_end, "zeroed bytes where a record should start", offset
        if kind == COMPRESSION:
            if length > room:
                return records, good_end, "compression record cut short", offset
            offset += HEADER_SIZE + length
            continue
        if kind not in (FULL, FIRST, MIDDLE, LAST):
            return records, good_end, f"invalid record type {kind}", offset
        if (kind in (FULL, FIRST)) == in_record:
            return records, good_end, "record fragments out of order", offset
        if length > room:
            return records, good_end, "record longer than the bytes left (cut short or damaged)", offset
        if zlib.crc32(data[offset + HEADER_SIZE - 1 : offset + HEADER_SIZE + length]) != crc:
            return records, good_end, "checksum mismatch", offset
        offset += HEADER_SIZE + length
        if kind in (FULL, LAST):
            records += 1
            good_end = offset
            in_record = False
        else:
            in_record = True


def _valid_at(data: bytes, offset: int) -> bool:
    """Whether a physical record with a correct checksum starts at `offset`."""
    if offset + HEADER_SIZE > len(data):
        return False
    crc, length, kind = _HEADER.unpack_from(data, offset)
    if kind not in (FULL, FIRST, MIDDLE, LAST) or length == 0:
        return False
    room = min(BLOCK_SIZE - offset % BLOCK_SIZE, len(data) - offset) - HEADER_SIZE
    shifted_room = len(data) - offset - HEADER_SIZE  # a shifted record may cross our block boundaries
    if length > max(room, min(shifted_room, BLOCK_SIZE - HEADER_SIZE)):
        return False
    return bool(zlib.crc32(data[offset + HEADER_SIZE - 1 : offset + HEADER_SIZE + length]) == crc)


def _valid_after(data: bytes, problem_at: int) -> int:
    """How many valid physical records follow a bad one: at block starts, and shifted just after it."""
    found = 0
    first_block = (problem_at // BLOCK_SIZE + 1) * BLOCK_SIZE
    for block in range(first_block, len(data), BLOCK_SIZE):
        found += _valid_at(data, block)
    if found:
        return found
    end = min(len(data), problem_at + _SHIFTED_SEARCH_BYTES)
    for offset in range(problem_at + 1, end - HEADER_SIZE + 1):
        if data[offset + 6] in (FULL, FIRST, MIDDLE, LAST) and _valid_at(data, offset):
            return 1
    return 0


def _salvage(data: bytes, start: int) -> Iterator[tuple[bytes, int]]:
    """(payload, bytes) of every whole record readable from `start` on, skipping what is damaged."""
    offset = start
    size = len(data)
    while offset < size:
        # Resynchronise: the next physical record with a correct checksum that begins a record.
        while offset + HEADER_SIZE <= size:
            if data[offset + 6] in (FULL, FIRST) and _valid_at(data, offset):
                break
            offset += 1
        else:
            return
        payload = bytearray()
        began = offset
        while True:
            _, length, kind = _HEADER.unpack_from(data, offset)
            payload += data[offset + HEADER_SIZE : offset + HEADER_SIZE + length]
            offset += HEADER_SIZE + length
            if kind in (FULL, LAST):
                yield bytes(payload), offset - began
                break
            if BLOCK_SIZE - offset % BLOCK_SIZE < HEADER_SIZE:
                offset += BLOCK_SIZE - offset % BLOCK_SIZE
            if not _valid_at(data, offset) or data[offset + 6] not in (MIDDLE, LAST):
                break


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, position


def _batch_keys(payload: bytes) -> list[bytes]:
    """The keys an engine batch writes; [] when it cannot be decoded."""
    keys = []
    try:
        if not payload or payload[0] != 1:
            return []
        _, position = _varint(payload, 1)
        count, position = _varint(payload, position)
        for _ in range(count):
            position += 1
            length, position = _varint(payload, position)
            keys.append(payload[position : position + length])
            position += length
            length, position = _varint(payload, position)
            position += length
            _, position = _varint(payload, position)
    except IndexError:
        return keys
    return keys


# Record keys (not index entries) of the ledger's tables, in SurrealDB's key encoding:
# ...*runs\0* then the string id (tag 0x03) up to NUL; ...*run_events\0* then an array (0x05) whose
# first element is the run id string (0x06) up to NUL.
_RUN_KEY = b"*runs\x00*\x03"
_EVENT_KEY = b"*run_events\x00*\x05\x06"


def _account(lost: Loss, key: bytes) -> None:
    for marker, target in ((_EVENT_KEY, "event"), (_RUN_KEY, "run")):
        at = key.find(marker)
        if at < 0:
            continue
        begin = at + len(marker)
        end = key.find(b"\x00", begin)
        run_id = key[begin : end if end >= 0 else len(key)].decode("utf-8", "replace")
        if target == "event":
            lost.events_by_run[run_id] += 1
        else:
            lost.runs_written.add(run_id)
        return
    lost.other_records += 1


def size(folder: Path) -> tuple[int, int]:
    """(bytes, files) of the log in `folder` (files holding data); (0, 0) when it does not exist yet."""
    total = files = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0, 0
    for entry in entries:
        if entry.name.endswith(".wal"):
            try:
                length = entry.stat().st_size
            except FileNotFoundError:
                continue
            total += length
            files += length > 0
    return total, files


def drop_failed_writes(path: Path, size_at_fault: int) -> int:
    """Cut a segment back to the last whole record that ended by `size_at_fault`; return the bytes dropped.

    For a log whose engine met a write error when the segment was `size_at_fault` bytes long:
    every write acknowledged before ended by then, and nothing was acknowledged after, so what
    follows is the failed writes, whole (the engine wrote them once it could) or in pieces.
    Nothing is cut when the records before that point are not all sound: that is damage, for
    the operator.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    end = _last_end(data, size_at_fault)
    if end is None or end >= len(data):
        return 0
    with path.open("r+b") as file:
        file.truncate(end)
        file.flush()
        os.fsync(file.fileno())
    return len(data) - end


def _last_end(data: bytes, limit: int) -> int | None:
    """The end of the last whole record ending at or before `limit`, if everything before it is sound."""
    prefix = data[:limit]  # a record cut at `limit` is the failed write, not damage
    _, good_end, problem, problem_at = _parse(prefix, 0)
    if problem is not None and _valid_after(prefix, problem_at):
        return None
    return good_end
