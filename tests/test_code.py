"""Making and parsing codes."""

from __future__ import annotations

import pytest

from p2pcp.code import Code, make_code, parse_code
from p2pcp.errors import UsageError
from p2pcp.wordlist import WORDS


def test_word_list_is_256_distinct_words_without_prefixes() -> None:
    assert len(WORDS) == 256 and len(set(WORDS)) == 256
    assert not [(a, b) for a in WORDS for b in WORDS if a != b and b.startswith(a)]
    assert all(w.isascii() and w.isalpha() and w.islower() for w in WORDS)


def test_make_code_uses_the_nameplate_and_two_list_words() -> None:
    code = make_code("7")
    assert code.nameplate == "7" and len(code.words) == 2
    assert all(w in WORDS for w in code.words)
    assert parse_code(str(code)) == code
    assert code.password == str(code).encode()


def test_codes_are_random() -> None:
    assert len({make_code("1").words for _ in range(200)}) > 150


@pytest.mark.parametrize("text", ["7-guitar-ocean", " 7-Guitar-OCEAN \n", "7 guitar ocean"])
def test_parse_is_forgiving_about_case_and_blanks(text: str) -> None:
    assert parse_code(text) == Code("7", ("guitar", "ocean"))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "no code"),
        ("guitar-ocean", "must start with a number"),
        ("x7-guitar-ocean", "must start with a number"),
        ("123456789-guitar-ocean", "must start with a number"),
        ("7-guitar", "a number and 2 words"),
        ("7-guitar-ocean-zebra", "a number and 2 words"),
        ("7-guitar-ocaen", "'ocaen' is not a code word: did you mean 'ocean'"),
        ("7-guitar-qqqqqq", "'qqqqqq' is not a code word$"),
        ("٧-guitar-ocean", "must start with a number"),
    ],
)
def test_parse_rejects_bad_codes_before_anything_is_sent(text: str, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        parse_code(text)
