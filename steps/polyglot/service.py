"""The Python half of the polyglot flow: what a message says about itself."""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"\w+", re.UNICODE)


def analyze(text: str) -> dict[str, object]:
    """Words, tone (question / exclamation / statement) and the dominant script."""
    ending = text.strip()[-1:]
    tone = {"?": "question", "!": "exclamation"}.get(ending, "statement")
    return {"words": len(_WORD.findall(text)), "tone": tone, "language": dominant_script(text)}


def dominant_script(text: str) -> str:
    """`latin`, `cjk`, ... from the Unicode names of its letters (`unknown` without letters)."""
    counts: dict[str, int] = {}
    for char in text:
        if not char.isalpha():
            continue
        name = unicodedata.name(char, "")
        if name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL")):
            script = "cjk"
        else:
            script = name.split(" ")[0].lower()  # LATIN SMALL LETTER A -> latin
        counts[script] = counts.get(script, 0) + 1
    return max(counts, key=lambda k: counts[k]) if counts else "unknown"
