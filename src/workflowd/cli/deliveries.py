"""`deliveries`: the caller's recent webhook deliveries and what became of them."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC
from typing import Any

from workflowd.api.client import to_dict
from workflowd.cli.common import add_output_option, print_json, visible
from workflowd.cli.connect import add_connection_options, call, client_of
from workflowd.v1 import workflow_service_pb2 as pb

_STATUSES = ("pending", "delivered", "failed")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "deliveries", help="list recent webhook deliveries and their outcome, newest first"
    )
    p.add_argument("--run", default="", metavar="RUN_ID", help="only those about this run")
    p.add_argument("--destination", default="", help="only those to this destination")
    p.add_argument("--status", action="append", default=[], choices=_STATUSES)
    p.add_argument("--page-size", type=int, default=50)
    p.add_argument("--page-token", default="")
    add_connection_options(p)
    add_output_option(p)
    p.set_defaults(handler=cmd_deliveries)


def cmd_deliveries(args: argparse.Namespace) -> int:
    async def list_deliveries() -> Any:
        request = pb.ListDeliveriesRequest(
            run_id=args.run,
            destination=args.destination,
            statuses=[pb.DeliveryStatus.Value(f"DELIVERY_STATUS_{s.upper()}") for s in args.status],
            page_size=args.page_size,
            page_token=args.page_token,
        )
        async with client_of(args) as client:
            return await call(client, "ListDeliveries", request)

    response = asyncio.run(list_deliveries())
    if args.output == "json":
        print_json(to_dict(response))
        return 0
    print(
        f"{'CREATED':19}  {'EVENT':16}  {'WORKFLOW':28}  {'DESTINATION':14}  {'OUTCOME':9}  TRIES"
    )
    for d in response.deliveries:
        created = d.created_at.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S")
        outcome = pb.DeliveryStatus.Name(d.status).removeprefix("DELIVERY_STATUS_").lower()
        workflow = visible(d.namespace + "/" + d.name)
        print(
            f"{created:19}  {d.event:16}  {workflow:28}  "
            f"{visible(d.destination):14}  {outcome:9}  {d.attempts}"
        )
        if d.run_id:
            print(f"  run {d.run_id}")
        if d.status != pb.DELIVERY_STATUS_DELIVERED and d.last_error:
            # Partly the receiver's own words (its answer's body): shown, never obeyed.
            print(f"  last error: {visible(d.last_error)}")
    if response.next_page_token:
        print(f"more: --page-token {response.next_page_token}")
    return 0
