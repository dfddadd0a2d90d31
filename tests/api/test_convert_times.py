"""Times on the wire: the API's own conversion gives what protobuf's `FromDatetime` gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import timestamp_pb2

from workflowd.api.convert import instant


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 12, 6, 6, 0, 0, 123456, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 3, 29, 1, 30, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
        datetime(2020, 2, 29, 12, 0, 0, 1),  # naive: taken as UTC, as protobuf does
    ],
)
def test_instant_matches_protobuf(value: datetime) -> None:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(value)
    assert instant(value) == expected
