"""Writes examples/data/events.csv: a few thousand product events, the same bytes every run.

python examples/data/generate_events.py [--rows 3000] [--out examples/data/events.csv]
"""

from __future__ import annotations

import argparse
import csv
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

EVENT_TYPES = [
    ("page_view", 60),
    ("search", 15),
    ("add_to_cart", 12),
    ("purchase", 8),
    ("refund", 1),
]
COUNTRIES = [
    ("US", 35),
    ("DE", 12),
    ("GB", 11),
    ("FR", 9),
    ("BR", 8),
    ("IN", 8),
    ("JP", 7),
    ("CA", 6),
    ("AU", 4),
]
START = datetime(2026, 11, 1, tzinfo=UTC)


def rows(count: int, seed: int = 20261124) -> list[list[str]]:
    rng = random.Random(seed)
    users = [f"u{n:04d}" for n in range(1, 401)]
    # A few heavy users, many light ones, as in real traffic.
    weights = [1.0 / (rank**0.8) for rank in range(1, len(users) + 1)]
    home = {user: rng.choices(*zip(*COUNTRIES, strict=True))[0] for user in users}
    moments = sorted(START + timedelta(seconds=rng.randrange(30 * 24 * 3600)) for _ in range(count))
    out = []
    for event_id, moment in enumerate(moments, start=1):
        user = rng.choices(users, weights)[0]
        event_type = rng.choices(*zip(*EVENT_TYPES, strict=True))[0]
        amount = ""
        if event_type in ("purchase", "refund"):
            value = round(rng.lognormvariate(3.4, 0.7), 2)
            amount = f"{-value if event_type == 'refund' else value:.2f}"
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        out.append([str(event_id), user, event_type, home[user], amount, stamp])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("events.csv"))
    args = parser.parse_args()
    with args.out.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["event_id", "user_id", "event_type", "country", "amount", "occurred_at"])
        writer.writerows(rows(args.rows))


if __name__ == "__main__":
    main()
