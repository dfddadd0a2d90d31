"""Parsing what people type: workflow references and JSON input."""

from __future__ import annotations

import json

from google.protobuf import json_format, struct_pb2

from workflowd.cli.common import CliError


def workflow_ref(ref: str, id_field: str = "id") -> dict[str, str]:
    """`namespace/name` or a workflow id, as GetWorkflowRequest/TriggerWorkflowRequest fields."""
    if "/" in ref:
        namespace, _, name = ref.partition("/")
        if not namespace or not name:
            raise CliError(f"{ref!r}: a workflow reference is an id or namespace/name")
        return {"namespace": namespace, "name": name}
    return {id_field: ref}


def parse_input(text: str) -> struct_pb2.Value:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"--input is not JSON: {exc}") from exc
    return json_format.ParseDict(data, struct_pb2.Value())
