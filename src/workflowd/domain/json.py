"""The JSON value type shared by every layer, and the bounds every stored value respects."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeAlias

Json: TypeAlias = bool | int | float | str | list["Json"] | dict[str, "Json"] | None
JsonObject: TypeAlias = dict[str, Json]

MAX_SAFE_INTEGER = 2**53 - 1
"""The largest integer a JSON number (an IEEE double, as protobuf's Value and jq hold it)
carries exactly."""

# Upper bounds of what each part of a value costs once encoded as a protobuf `Value` in an API
# response: a field tag plus a length prefix around every nested message, 8 bytes per number.
_FRAME = 6
_SCALAR = 2
_NUMBER = 9


class ValueTooLarge(Exception):
    """A value breaks `JsonBounds`; the message is one sentence naming the limit."""


@dataclass(frozen=True, slots=True)
class JsonBounds:
    """How deep and how large a value may be. The depth stays well below protobuf's decoding
    limit (100 nested messages, and each JSON level costs two of them in a `Value`), and the
    size is counted as the value travels in an API response, so a value stored within these
    bounds can always be read back."""

    max_depth: int = 32
    max_bytes: int = 1024 * 1024

    def measure(self, value: Json) -> int:
        """The value's encoded size; raises `ValueTooLarge` past any bound."""
        return self.inspect(value)[0]

    def inspect(self, value: Json) -> tuple[int, bool]:
        """The value's encoded size, and whether a string or key in it holds a NUL (see
        `nul_pointer`), in one walk; raises `ValueTooLarge` past any bound."""
        return encoded_size(value, self.max_depth, self.max_bytes)


def encoded_size(value: Json, max_depth: int, max_bytes: int) -> tuple[int, bool]:
    """Walks the value without recursion (it may be hostile), checking depth, numbers and
    strings on the way, and sums an upper bound of its encoded size; also says whether a
    string or key holds a NUL. The walk stops past `max_bytes`: a value made in memory may
    share its parts (a fork's output holding its input once per branch, fed back to it by a
    `then` loop), so its encoded size can grow as a power of the loop's rounds while its
    objects do not."""
    size = 0
    nul = False
    stack: list[tuple[Json, int]] = [(value, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        if size > max_bytes:
            raise _over(max_bytes)
        item, depth = pop()
        if isinstance(item, str):
            size += _FRAME + _text_bytes(item, "a string")
            nul = nul or "\0" in item
        elif isinstance(item, dict):
            if depth >= max_depth:
                raise ValueTooLarge(f"it is nested deeper than {max_depth} levels")
            size += _FRAME
            for key, child in item.items():
                size += 2 * _FRAME + _text_bytes(key, "a key")
                nul = nul or "\0" in key
                push((child, depth + 1))
        elif isinstance(item, list):
            if depth >= max_depth:
                raise ValueTooLarge(f"it is nested deeper than {max_depth} levels")
            size += _FRAME * (1 + len(item))
            stack.extend([(child, depth + 1) for child in item])
        elif item is None or isinstance(item, bool):
            size += _SCALAR
        else:
            _check_number(item)
            size += _NUMBER
    if size > max_bytes:
        raise _over(max_bytes)
    return size, nul


def _over(max_bytes: int) -> ValueTooLarge:
    return ValueTooLarge(f"it takes more than {max_bytes} bytes in an API response, the limit")


def _text_bytes(text: str, what: str) -> int:
    if text.isascii():  # most text: its length is its size, with nothing to encode
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueTooLarge(f"{what} is not valid Unicode (it holds a lone surrogate)") from None


def _check_number(number: int | float) -> None:
    if isinstance(number, int) and abs(number) > MAX_SAFE_INTEGER:
        raise ValueTooLarge(
            f"an integer is outside ±{MAX_SAFE_INTEGER}, the range JSON numbers carry exactly"
        )
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueTooLarge("a number is not finite (NaN and infinities have no JSON form)")


def nul_pointer(value: Json) -> str | None:
    """The JSON pointer of the first string (or key) holding a NUL, None if there is none. A
    NUL is refused where it would be stored: PostgreSQL cannot hold one in text, and jobs
    systems (C code) read it as the end of the string."""
    stack: list[tuple[Json, str]] = [(value, "")]
    while stack:  # no recursion: the value may be hostile
        item, pointer = stack.pop()
        if isinstance(item, str):
            if "\0" in item:
                return pointer
        elif isinstance(item, dict):
            for key, child in item.items():
                escaped = key.replace("~", "~0").replace("/", "~1")
                if "\0" in key:
                    return f"{pointer}/{escaped}"
                stack.append((child, f"{pointer}/{escaped}"))
        elif isinstance(item, list):
            stack.extend((child, f"{pointer}/{i}") for i, child in enumerate(item))
    return None
