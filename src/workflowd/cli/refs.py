"""Parsing what people type: workflow references, run ids and JSON input."""

from __future__ import annotations

import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from google.protobuf import json_format, struct_pb2

from workflowd.cli.common import CliError, read_file

NOT_A_REF = "is not a workflow reference"
REF_FORMS = "write NAMESPACE/NAME (as analytics/daily-summary) or the workflow's id"
MIN_RUN_PREFIX = 4  # as git's shortest abbreviated hash


class RefFields(TypedDict, total=False):
    """How every request that names a workflow names it."""

    workflow_id: str
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Ref:
    """A workflow reference as typed: an id, or a namespace and a name; `bare` when it was one
    word that is neither (perhaps a name without its namespace)."""

    workflow_id: str = ""
    namespace: str = ""
    name: str = ""
    bare: str = ""

    def fields(self) -> RefFields:
        """The request fields that name the workflow."""
        if self.workflow_id:
            return {"workflow_id": self.workflow_id}
        return {"namespace": self.namespace, "name": self.name}


def is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def parse_ref(text: str) -> Ref:
    """`namespace/name`, or a workflow id; anything else comes back `bare`."""
    if "/" in text:
        namespace, _, name = text.partition("/")
        if not namespace or not name or "/" in name:
            raise CliError(f"{text!r} {NOT_A_REF}: {REF_FORMS}")
        return Ref(namespace=namespace, name=name)
    if is_uuid(text):
        return Ref(workflow_id=text.lower())
    return Ref(bare=text)


def parse_input(text: str, flag: str = "--input") -> struct_pb2.Value:
    """JSON given inline, or `@FILE` to read it from a file (`@-`: standard input)."""
    source = f"{flag} {text}" if text.startswith("@") else flag
    if text == "@-":
        body = sys.stdin.read()
    elif text.startswith("@"):
        body = read_file(Path(text[1:]), flag).decode("utf-8", "replace")
    else:
        body = text
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise CliError(f"{source} is not JSON: {exc}") from exc
    return json_format.ParseDict(data, struct_pb2.Value())
