"""URLs built from encoded parts: a value placed in a path (a job id, a dataset name) is always
one percent-encoded segment, so a '/', '?', '&' or '#' inside it stays data and can never reach
another endpoint or add parameters. Query parameters go through aiohttp's `params`, which
encodes them."""

from __future__ import annotations

from urllib.parse import quote

import yarl


def path(*segments: str) -> str:
    """`/seg1/seg2…`, each segment percent-encoded (nothing in it is left as syntax)."""
    return "".join("/" + quote(segment, safe="") for segment in segments)


class Base:
    """A service's base URL, under which encoded paths are placed without re-encoding."""

    def __init__(self, url: str) -> None:
        # Parsed once: yarl encodes whatever the configured URL needs, and `str()` is its
        # encoded form, to which an already-encoded path can be appended as is.
        self._encoded = str(yarl.URL(url.rstrip("/")))

    def join(self, encoded_path: str) -> yarl.URL:
        return yarl.URL(self._encoded + encoded_path, encoded=True)

    def __str__(self) -> str:
        return self._encoded
