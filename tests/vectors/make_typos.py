"""Write ``typos.json``: for mistyped code words, the word the CLI suggests (``p2pcp/code.py``
``suggest_word``), or null. ``tests/test_web.py`` checks the Python side still produces exactly
this file, and ``tests/js/`` that the page suggests the same.

Run ``python tests/vectors/make_typos.py`` only when the suggestion rule changes on purpose."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from p2pcp.code import suggest_word  # noqa: E402
from p2pcp.wordlist import WORDS  # noqa: E402

HERE = Path(__file__).parent


def typos() -> list[str]:
    """A deletion, a transposition, a substitution, an insertion and a prefix of each word,
    and some words that are nothing like a code word."""
    out: list[str] = []
    for n, word in enumerate(WORDS):
        k = 1 + n % (len(word) - 1)
        out.append(word[:k] + word[k + 1 :])
        out.append(word[: k - 1] + word[k] + word[k - 1] + word[k + 1 :])
        out.append(word[:k] + "xqz"[n % 3] + word[k + 1 :])
        out.append(word[:k] + "e" + word[k:])
        out.append(word[:3])
    return [*dict.fromkeys(out), "zzzzzz", "qwerty", "a", "xylophone"]


def render() -> str:
    return json.dumps({t: suggest_word(t) for t in typos()}, indent=0, sort_keys=True) + "\n"


if __name__ == "__main__":
    (HERE / "typos.json").write_text(render())
