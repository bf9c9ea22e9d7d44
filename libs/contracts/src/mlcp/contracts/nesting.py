"""How deeply a JSON text nests, found without parsing it.

JSON parsers recurse once per level: 20,000 nested arrays make the stdlib ``json`` and msgspec
raise ``RecursionError`` and pydantic-core refuse the text, and a value that stays under their
limits can still overflow whatever walks it afterwards. A decoder asks ``nesting_exceeds``
before it parses: a record nested deeper than the limit is refused without being parsed.

Cost: a text with no more opening brackets than the limit cannot nest deeper, so the common
case is two ``bytes.count`` calls (C speed, no allocation: under a microsecond for a 1 kB
event). Only a text with more brackets than the limit (a large profile, a hostile record) is
measured exactly, still by C-speed passes over its bytes: escapes and strings dropped by
``replace`` / ``split``, the brackets kept by ``translate``, then one ``replace`` per level
(each removes the innermost level) until the limit is passed or a run of openers proves it:
milliseconds for 1 MiB. No regular expression: one that matches strings can backtrack
quadratically on a record of unterminated escaped quotes.
"""

from __future__ import annotations

MAX_JSON_DEPTH = 64
"""Deepest nesting a record may have by default; the deepest event of the catalog (a reference
profile's quantiles) nests 7 levels."""

_SAME_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def nesting_exceeds(raw: bytes, limit: int) -> bool:
    """True when the JSON text ``raw`` nests objects/arrays more than ``limit`` levels deep.

    A text that is not JSON (unbalanced brackets) is judged by its opening brackets; the parser
    refuses it anyway, this only decides which reason it gets.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    # Inside a string a backslash always escapes the next character: dropping escaped
    # backslashes first, then escaped quotes, leaves only the quotes that delimit strings.
    text = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = b"".join(text.split(b'"')[::2]).translate(_SAME_BRACKETS, _NOT_BRACKETS)
    needed = limit + 1  # levels still to find below the ones removed
    while skeleton:
        if b"[" * needed in skeleton:  # that many openers in a row: deep enough, at once
            return True
        # Removing every empty pair "[]" removes exactly the innermost level of every branch.
        shorter = skeleton.replace(b"[]", b"")
        if len(shorter) == len(skeleton):  # unbalanced: not JSON
            return skeleton.count(b"[") >= needed
        skeleton = shorter
        needed -= 1
        if needed == 0:
            return True
    return False
