"""Trigger a workflow and wait for its run, from Python: `python examples/trigger.py NS/NAME`.

The client takes the CLI's settings from the environment (WORKFLOWD_ADDRESS, WORKFLOWD_TOKEN,
WORKFLOWD_TLS_CA, ...); docs/python-client.md shows the rest of it.
"""

from __future__ import annotations

import json
import sys

import workflowd


def main(workflow: str) -> int:
    with workflowd.Client.from_env() as client:
        run = client.trigger(workflow, input={"requestedBy": "examples/trigger.py"})
        print(f"run {run.id} of {run.workflow} started")
        try:
            done = client.wait(run.id, timeout_s=600)
        except workflowd.RunFailed as failed:
            assert failed.problem is not None  # a failed run carries its problem
            print(f"run {run.id} failed at {failed.problem.instance}: {failed.problem.title}")
            return 1
        for task in done.tasks:
            print(f"  {task.name:12} {task.status:10} {json.dumps(task.output)}")
        print(f"run {done.id} {done.status}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "analytics/daily-summary"))
