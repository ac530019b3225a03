"""Bounds on what one request may carry, and the rule that what is accepted can be read back.

A default gRPC client receives messages of at most 4 MiB. The daemon
accepts events of up to --max-payload-bytes and sends them back in read
chunks; if one event could be larger than a read message can carry (the
daemon's own --max-message-bytes, or a default client's limit with room to
spare), an acknowledged event could never be read back. `check_settings`
refuses such settings at start, naming the flags.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one request may carry; exceeding one is INVALID_ARGUMENT."""

    max_batch_events: int = 1000
    max_payload_bytes: int = 1 << 20
    max_message_bytes: int = 16 << 20


DEFAULT_CLIENT_RECEIVE_BYTES = 4 << 20  # gRPC's default max_receive_message_length
# The largest read message the daemon lets one event make: well under the default client limit.
MAX_READ_MESSAGE_BYTES = 3 << 20
# Everything in a read message besides the payload: run_id and kind (up to 256 bytes each), seq,
# timestamp, digest, and the framing of the event and of the response, rounded up.
MESSAGE_FRAMING = 1024


def largest_event_message(limits: Limits) -> int:
    """The size of a read message carrying one event with the largest acceptable payload."""
    return limits.max_payload_bytes + MESSAGE_FRAMING


def check_settings(limits: Limits) -> None:
    """ValueError naming the flags when an acceptable event could not be read back."""
    largest = largest_event_message(limits)
    if largest > limits.max_message_bytes:
        raise ValueError(
            f"--max-payload-bytes ({limits.max_payload_bytes}) plus {MESSAGE_FRAMING} bytes for the rest of an "
            f"event must fit in --max-message-bytes ({limits.max_message_bytes}), or acknowledged events could "
            f"never be read back; lower --max-payload-bytes to at most {limits.max_message_bytes - MESSAGE_FRAMING}"
        )
    if largest > MAX_READ_MESSAGE_BYTES:
        raise ValueError(
            f"--max-payload-bytes ({limits.max_payload_bytes}) makes read messages of up to {largest} bytes; "
            f"clients with gRPC's default {DEFAULT_CLIENT_RECEIVE_BYTES}-byte receive limit need them under "
            f"{MAX_READ_MESSAGE_BYTES}: lower --max-payload-bytes to at most {MAX_READ_MESSAGE_BYTES - MESSAGE_FRAMING}"
        )
