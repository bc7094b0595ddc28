"""What a receiver does with each offered file given what is here: marks and plans, pure."""

from __future__ import annotations

import hashlib

from p2pcp import conflicts as c
from p2pcp.writers import HeldLocal


def _held(size: int, complete: bool, content: bytes = b"") -> HeldLocal:
    hasher = hashlib.sha256(content or b"x" * size)
    return HeldLocal(size, hasher.hexdigest(), hasher, complete)


def test_marks_with_the_senders_hashes_known() -> None:
    held = {1: _held(4, True), 2: _held(3, False), 4: _held(5, False)}
    # 0 new; 1 the same file whole; 2 a partial that continues; 3 another file in place;
    # 4 a partial beside a different file in place
    marks = c.statuses(5, held, existing={1, 3, 4}, matched={1, 2, 4})
    assert marks == [c.NEW, c.IDENTICAL, c.RESUMES, c.DIFFERS, c.DIFFERS]


def test_a_held_file_the_sender_does_not_confirm() -> None:
    held = {0: _held(4, True), 1: _held(3, False)}
    assert c.statuses(2, held, existing={0}, matched=set()) == [c.DIFFERS, c.NEW]
    # Before version 3 nothing is confirmed before asking: a file of the same size "exists".
    assert c.statuses(2, held, existing={0}, matched=None) == [c.EXISTS, c.RESUMES]


def test_plans_for_each_choice() -> None:
    held = {1: _held(4, True), 2: _held(3, False), 4: _held(5, False)}
    marks = [c.NEW, c.IDENTICAL, c.RESUMES, c.DIFFERS, c.DIFFERS]
    skip = c.plan(marks, held, "skip")
    assert skip.offsets == {1: 4, 2: 3} and skip.skip == {3, 4} and skip.conflict == {}
    for choice in ("overwrite", "rename"):
        plan = c.plan(marks, held, choice)
        assert plan.offsets == {1: 4, 2: 3, 4: 5}  # the partial continues into the new file
        assert plan.skip == frozenset() and plan.conflict == {3: choice, 4: choice}
    assert c.plan([c.NEW, c.NEW], {}, "") == c.Plan()


def test_matching_compares_size_and_hash() -> None:
    held = {0: _held(4, True, b"abcd"), 1: _held(2, False, b"ab")}
    ours = hashlib.sha256(b"abcd").hexdigest()
    assert c.matching(held, ((0, 4, ours), (1, 2, ours))) == {0}
    assert c.matching(held, ((0, 3, ours),)) == set()
