"""docs/jobs-api.md: every request/response example holds against the running data plane."""

from __future__ import annotations

from pathlib import Path

from tests.dataplane.doc_examples import Replayer, parse
from tests.dataplane.dp_support import Running

DOC = Path(__file__).resolve().parents[2] / "docs" / "jobs-api.md"


async def test_every_documented_exchange_matches_the_server(dp: Running) -> None:
    examples = parse(DOC.read_text())
    assert len(examples) >= 20
    titles = {example.title.split(" ")[0] + " " + example.title.split(" ")[1].split("?")[0]
              for example in examples}  # fmt: skip
    for endpoint in ("POST /jobs", "GET /jobs", "GET /datasets", "GET /healthz"):
        assert endpoint in titles
    replayer = Replayer(dp.client)
    for example in examples:
        await replayer.check(example)
