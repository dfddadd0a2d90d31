"""The bearer token the jobs client presents, which may be replaced while it runs.

The local data plane's supervisor makes a new service token for each start of its child, so a
token that leaked dies with the child it was made for. A request sent with the token of a
child that has since died may reach its successor and be refused (401); that refusal says
nothing about the request, so the client retries it with the token now in force.
"""

from __future__ import annotations


class Credential:
    def __init__(self, token: str | None = None) -> None:
        self._token = token or None

    @property
    def token(self) -> str | None:
        return self._token

    def replace(self, token: str) -> None:
        self._token = token

    def replaced(self, sent: str | None) -> bool:
        """Whether `sent`, the token a request carried, is no longer the one in force."""
        return sent != self._token
