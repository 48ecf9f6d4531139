"""Ids: execution ids are UUIDv7 (time-ordered, 74 random bits), request ids random UUID4."""

from __future__ import annotations

import time
import uuid

from server.engine.ids import new_execution_id, new_id


def test_execution_ids_are_uuid7_carrying_the_time_and_sort_by_it() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_execution_id() for _ in range(3000)]  # more than one batch of random tails
    after = time.time_ns() // 1_000_000
    parsed = [uuid.UUID(i) for i in ids]
    assert all(str(u) == i for u, i in zip(parsed, ids, strict=True))  # canonical lower-case text
    assert {(u.version, u.variant) for u in parsed} == {(7, uuid.RFC_4122)}
    stamps = [u.int >> 80 for u in parsed]
    assert before <= stamps[0] and stamps == sorted(stamps) and stamps[-1] <= after
    assert len(set(ids)) == 3000
    # The 74 random bits vary in every position: no bit is stuck at 0 or 1 across the ids.
    random_bits = [(u.int & ((1 << 62) - 1)) | (((u.int >> 64) & 0xFFF) << 62) for u in parsed]
    everything = 0
    for bits in random_bits:
        everything |= bits
    common = random_bits[0]
    for bits in random_bits:
        common &= bits
    assert (everything, common) == ((1 << 74) - 1, 0)


def test_request_ids_are_random_uuid4() -> None:
    parsed = [uuid.UUID(new_id()) for _ in range(600)]
    assert {(u.version, u.variant) for u in parsed} == {(4, uuid.RFC_4122)}
    assert len({u.int for u in parsed}) == 600
