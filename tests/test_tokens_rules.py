"""workflowd's tokens-file reader and the data plane's apply the same rules: fed the same
files, hostile or not, they refuse the same ones with the same words and read the others
alike. The data plane does not import workflowd, so the rules are written twice; this is
what keeps them one."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from dataplane import auth as plane_auth
from workflowd.api import tokens as daemon_tokens
from workflowd.domain.errors import InvalidRequest


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


A, B = sha("tok-a"), sha("tok-b")


def entry(company: str = "acme", name: str = "ci", digest: str = A) -> str:
    return f'[[tokens]]\ncompany = "{company}"\nname = "{name}"\nsha256 = "{digest}"\n'


def service(name: str = "svc", digest: str = B) -> str:
    return f'[[service_tokens]]\nname = "{name}"\nsha256 = "{digest}"\n'


HOSTILE = {
    "the same name twice": entry() + entry("globex", "ci", B),
    "a name repeated by a service token": entry() + service("ci"),
    "the same digest twice": entry() + entry("globex", "ci-2", A),
    "a company with a trailing newline": entry('acme\\n'),
    "a name with a trailing newline": entry(name="ci\\n"),
    "a digest with a trailing newline": entry(digest=A + "\\n"),
    "a company with a leading newline": entry("\\nacme"),
    "an upper-case digest": entry(digest=A.upper()),
    "a token in clear instead of its digest": entry(digest="s3cret-token-in-clear"),
    "a company that is not a name": entry("Acme Corp"),
    "an empty company": entry(""),
    "a company of 65 characters": entry("a" * 65),
    "a name with a space": entry(name="acme ci"),
    "an unknown field": entry() + 'colour = "red"\n',
    "a missing digest": '[[tokens]]\ncompany = "acme"\nname = "ci"\n',
    "a company that is a number": '[[tokens]]\ncompany = 7\nname = "ci"\nsha256 = "' + A + '"\n',
    "a service token with a company": service().replace("[[service_tokens]]\n", "[[service_tokens]]\ncompany = 'acme'\n"),
    "a service token with a bad digest": service(digest="nope"),
    "a service token with a bad name": service(name="svc\\n"),
    "tokens that are not tables": 'tokens = "acme"\n',
    "an unknown section": '[[users]]\nname = "x"\n',
    "no entry at all": "",
    "not TOML": "[[tokens]\n",
    "not UTF-8": entry().replace("acme", "acm\udcff"),
}  # fmt: skip
WELL_FORMED = {
    "companies": entry() + entry("globex", "globex-ci@2", B),
    "a company and a service": entry() + service(),
    "only a service": service(),
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tokens.toml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    return path


@pytest.mark.parametrize("case", HOSTILE)
def test_both_readers_refuse_a_hostile_file_with_the_same_words(tmp_path: Path, case: str) -> None:
    path = write(tmp_path, HOSTILE[case])
    with pytest.raises(ValueError, match="the tokens file") as plane:
        plane_auth.load_tokens(path)
    with pytest.raises(InvalidRequest) as daemon:
        daemon_tokens.load_tokens(path)
    assert daemon.value.field == "tokens_file"
    assert daemon.value.message == f"tokens_file: {plane.value}"
    assert "s3cret" not in str(plane.value), "a token in the wrong field is never echoed"


@pytest.mark.parametrize("case", WELL_FORMED)
def test_both_readers_read_a_well_formed_file_alike(tmp_path: Path, case: str) -> None:
    path = write(tmp_path, WELL_FORMED[case])
    plane = plane_auth.load_tokens(path)
    daemon = daemon_tokens.load_tokens(path)
    # gRPC serves company tokens only: a service token acts for any company it names, which
    # only a data plane accepts.
    assert {(p.sha256, p.company, p.name) for p in daemon.principals()} == {
        (digest, p.company, p.name)
        for digest, p in plane.by_digest.items()
        if p.company is not None
    }
