"""Assertions on refusals, as the tests phrase them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest


@contextmanager
def fails(code: grpc.StatusCode, *words: str) -> Iterator[None]:
    """The call inside fails with `code`, and its message names each of `words`."""
    with pytest.raises(grpc.RpcError) as info:
        yield
    error: Any = info.value
    assert error.code() == code, f"{error.code()}: {error.details()}"
    for word in words:
        assert word in error.details(), f"{word!r} not named in {error.details()!r}"
