"""Names and strings a specification gives the daemon to store and show.

A task name is stored in its own column, printed by the CLI and carried in events, so it must
be text a terminal shows as text: no C0 or C1 control character (an ESC would let a name
rewrite an operator's screen, a NUL is refused by PostgreSQL) and a bounded length. Any other
string of a specification must hold no NUL: the data plane and PostgreSQL refuse them, so a
NUL would only fail later, at run time.
"""

from __future__ import annotations

import re

from workflowd.domain.diagnostics import Diagnostic, pointer_join
from workflowd.domain.ids import shown
from workflowd.domain.json import Json

MAX_NAME_CHARS = 256
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def check_name(name: str, pointer: str, what: str = "a task name") -> list[Diagnostic]:
    """`name` (at `pointer`) is printable text of at most `MAX_NAME_CHARS` characters."""
    found = _CONTROL.search(name)
    if found is not None:
        code = f"U+{ord(found.group()):04X}"
        return [
            Diagnostic(
                f"{what} must not hold control characters: {shown(name)} has {code} at"
                f" character {found.start()}",
                pointer,
            )
        ]
    if len(name) > MAX_NAME_CHARS:
        return [
            Diagnostic(
                f"{what} must be at most {MAX_NAME_CHARS} characters, not {len(name)}", pointer
            )
        ]
    return []


def check_strings(document: Json) -> list[Diagnostic]:
    """A diagnostic at each string value that holds a NUL (keys are names: `check_name`)."""
    out: list[Diagnostic] = []
    stack: list[tuple[Json, str]] = [(document, "")]
    while stack:  # no recursion: the document may nest deeply
        value, pointer = stack.pop()
        if isinstance(value, str) and "\0" in value:
            at = value.index("\0")
            out.append(
                Diagnostic(f"a string must not hold NUL (U+0000), found at character {at}", pointer)
            )
        elif isinstance(value, dict):
            stack.extend((child, pointer_join(pointer, key)) for key, child in value.items())
        elif isinstance(value, list):
            stack.extend((child, pointer_join(pointer, i)) for i, child in enumerate(value))
    return sorted(out, key=lambda d: d.pointer)
