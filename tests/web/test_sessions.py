"""Session cookies: signed by this process, bound to a token still in force, never forged."""

from __future__ import annotations

from dataclasses import dataclass, field

from workflowd.web.auth import Sessions


@dataclass
class Table:
    """Tokens in force: token → (company, digest)."""

    tokens: dict[str, tuple[str, str]] = field(default_factory=dict)
    local: str | None = None

    @property
    def local_company(self) -> str | None:
        return self.local

    def principal(self, token: str) -> tuple[str, str] | None:
        return self.tokens.get(token)

    def grants(self, company: str, digest: str) -> bool:
        return (company, digest) in self.tokens.values()


def test_a_cookie_holds_while_its_token_is_in_force() -> None:
    table = Table({"tok": ("acme", "d1")})
    sessions = Sessions(table)
    assert sessions.signing_in
    assert sessions.sign_in("nope") is None
    assert sessions.local() is None
    signed = sessions.sign_in("tok")
    assert signed is not None
    assert "tok" not in signed.cookie
    again = sessions.session(signed.cookie)
    assert again is not None
    assert (again.company, again.csrf) == ("acme", signed.csrf)
    table.tokens = {"tok": ("globex", "d1")}  # the same token, given to another company
    assert sessions.session(signed.cookie) is None
    table.tokens = {}
    assert sessions.session(signed.cookie) is None


def test_a_forged_or_foreign_cookie_is_no_session() -> None:
    table = Table({"tok": ("acme", "d1"), "tok2": ("globex", "d2")})
    sessions = Sessions(table)
    signed = sessions.sign_in("tok")
    assert signed is not None
    body, _, mac = signed.cookie.rpartition(".")
    other = sessions.sign_in("tok2")
    assert other is not None
    other_body = other.cookie.rpartition(".")[0]
    for forged in (
        f"{other_body}.{mac}",
        f"{body}.{'0' * len(mac)}",
        body,
        "",
        "x" * 10_000,
        "%%%.abc",
    ):
        assert sessions.session(forged) is None, forged
    assert Sessions(table).session(signed.cookie) is None  # another process's key
    assert signed.csrf != other.csrf


def test_without_tokens_every_visitor_is_the_local_company() -> None:
    sessions = Sessions(Table(local="local"))
    assert not sessions.signing_in
    assert sessions.sign_in("anything") is None
    made = sessions.local()
    assert made is not None
    assert made.company == "local"
    held = sessions.session(made.cookie)
    assert held is not None
    assert held.company == "local"
    # A cookie signed in with a token is refused once the daemon serves without tokens.
    assert not sessions.valid("acme", "d1")
