"""A retry's `jitter: {from, to}`: read from the spec, added to every backoff delay, and drawn
afresh for each retry (so that many runs retrying at once spread out)."""

from __future__ import annotations

import random

from workflowd.domain.definition import TryBody
from workflowd.spec import parse

SPEC = """\
document: {dsl: '1.0.0', namespace: ns, name: jittery, version: '1.0.0'}
do:
  - guard:
      try:
        - flaky: {set: {n: 1}}
      catch:
        retry:
          delay: {seconds: 2}
          backoff: {linear: {}}
          jitter: {from: {milliseconds: 100}, to: {seconds: 1}}
          limit: {attempt: {count: 5}}
"""


def test_jitter_is_read_and_added_to_each_delay_within_its_bounds() -> None:
    body = parse(SPEC).do.tasks[0].body
    assert isinstance(body, TryBody)
    retry = body.catch.retry
    assert retry is not None
    assert retry.backoff.jitter_s == (0.1, 1.0)
    draws = random.Random(7)
    for failed in (1, 2, 3):
        delays = [retry.next_delay(failed, 0.0, draws.uniform) for _ in range(200)]
        base = 2.0 * failed  # linear
        assert all(d is not None and base + 0.1 <= d <= base + 1.0 for d in delays), delays
        assert len(set(delays)) > 150  # drawn afresh each time, not one offset for all
    assert retry.next_delay(6, 0.0) is None  # count 5: six executions, then no more
