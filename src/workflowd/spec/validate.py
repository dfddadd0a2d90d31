"""`validate()` and `parse()`: text → diagnostics and, when there are no errors, a definition."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from workflowd.domain import ids
from workflowd.domain.definition import FlowLimits, TaskList, WorkflowDefinition
from workflowd.domain.diagnostics import Diagnostic, Severity, pointer_join
from workflowd.domain.errors import InvalidSpecification
from workflowd.domain.json import Json
from workflowd.spec.fields import (
    check_flow_expression,
    check_timeout,
    closed,
    expect_object,
    type_name,
)
from workflowd.spec.inputschema import check_input_schema
from workflowd.spec.names import check_strings
from workflowd.spec.schedule import check_schedule
from workflowd.spec.tasks import Context, read_list
from workflowd.spec.uses import read_use
from workflowd.spec.yamlload import Positions, load

# The DSL's own patterns (schema/workflow.yaml), so whatever we accept the official schema does.
_ID = r"(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
SEMVER = re.compile(
    rf"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-{_ID}(?:\.{_ID})*)?"
    r"(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?$"
)

_TOP_KEYS = ("document", "do", "schedule", "input", "output", "timeout", "use")
_TOP_REFUSED = {
    "evaluate": "`evaluate` is not supported yet: expressions are always jq in strict mode",
}
_DOCUMENT_KEYS = ("dsl", "namespace", "name", "version", "title", "summary", "tags", "metadata")


@dataclass(frozen=True)
class Limits:
    max_spec_bytes: int = 256 * 1024
    max_tasks: int = 1000
    """Tasks in the whole document, nested ones included."""
    max_yaml_nodes: int = 100_000  # after alias expansion: the alias-bomb guard
    flow: FlowLimits = field(default_factory=FlowLimits)


@dataclass(frozen=True)
class ValidationResult:
    definition: WorkflowDefinition | None
    diagnostics: tuple[Diagnostic, ...]
    document: Json = None

    @property
    def valid(self) -> bool:
        return not any(d.severity is Severity.ERROR for d in self.diagnostics)


def validate(text: str, limits: Limits = Limits()) -> ValidationResult:
    """Every problem of a specification, each with pointer and position. Never raises."""
    try:
        return _validate(text, limits)
    except Exception as exc:  # a bug must reach the user as a diagnostic, not a crash
        message = f"internal error while validating ({type(exc).__name__}); please report it"
        return ValidationResult(None, (Diagnostic(message),))


def _validate(text: str, limits: Limits) -> ValidationResult:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.max_spec_bytes:
        message = f"the specification is {size} bytes; the limit is {limits.max_spec_bytes}"
        return ValidationResult(None, (Diagnostic(message),))
    loaded = load(text, limits.max_yaml_nodes)
    document = loaded.document
    diagnostics = list(loaded.diagnostics)
    if loaded.document is None and diagnostics:
        return ValidationResult(None, tuple(diagnostics))
    if not isinstance(document, dict):
        message = (
            "a workflow must be a mapping with `document` and `do` at the top level, "
            f"not {type_name(document)}"
        )
        return ValidationResult(None, (Diagnostic(message, "", 1, 1),), document)
    found, problems = check_workflow(document, limits)
    problems += check_strings(document)
    placed = tuple(_place(d, loaded.positions) for d in diagnostics + problems)
    if found is None or any(d.severity is Severity.ERROR for d in placed):
        return ValidationResult(None, placed, document)
    return ValidationResult(build_definition(document, found), placed, document)


def parse(text: str, limits: Limits = Limits()) -> WorkflowDefinition:
    """The definition, or InvalidSpecification carrying every diagnostic."""
    result = validate(text, limits)
    if result.definition is None:
        raise InvalidSpecification(result.diagnostics)
    return result.definition


def _place(diagnostic: Diagnostic, positions: Positions) -> Diagnostic:
    """Add the line and column of the pointer's node, or of its nearest located ancestor."""
    if diagnostic.line:
        return diagnostic
    pointer = diagnostic.pointer
    while pointer not in positions and pointer:
        pointer = pointer.rsplit("/", 1)[0]
    line, column = positions.get(pointer, (0, 0))
    return dataclasses.replace(diagnostic, line=line, column=column)


def check_workflow(
    document: Mapping[str, Json], limits: Limits
) -> tuple[TaskList | None, list[Diagnostic]]:
    """Every diagnostic of the document, and its `do` list when that is valid."""
    out = closed(document, "", _TOP_KEYS, _TOP_REFUSED)
    for required in ("document", "do"):
        if required not in document:
            out.append(Diagnostic(f"missing required top-level key `{required}`", ""))
    ctx = Context(limits.flow, limits.max_tasks)
    if "use" in document:
        errors, retries, problems = read_use(document["use"], ctx)
        ctx = dataclasses.replace(ctx, errors=errors, retries=retries)
        out += problems
    tasks: TaskList | None = None
    if "do" in document:
        tasks, problems = read_list(document["do"], "/do", ctx)
        out += problems
    checks: dict[str, Callable[[Json], list[Diagnostic]]] = {
        "document": _check_document,
        "schedule": lambda value: check_schedule(value)[1],
        "input": lambda value: _check_io(value, "/input", "from", "input.from"),
        "output": lambda value: _check_io(value, "/output", "as", "output.as"),
        "timeout": lambda value: check_timeout(value, "/timeout")[1],
    }
    for key, check in checks.items():
        if key in document:
            out += check(document[key])
    return tasks, out


def _check_document(value: Json) -> list[Diagnostic]:
    if (problem := expect_object(value, "/document", "document")) is not None:
        return [problem]
    assert isinstance(value, dict)
    out = closed(value, "/document", _DOCUMENT_KEYS)
    for key in ("dsl", "namespace", "name", "version"):
        if key not in value:
            out.append(Diagnostic(f"document requires `{key}`", "/document"))
    for key, item in value.items():
        message = _document_field(key, item)
        if message:
            out.append(Diagnostic(message, pointer_join("/document", key)))
    return out


def _document_field(key: str, value: Json) -> str | None:
    if key in ("dsl", "version") and type(value) in (int, float):
        return (
            f"{key} must be a string: quote it, e.g. {key}: '1.0.0' ({value} unquoted is a number)"
        )
    if key in ("dsl", "version", "namespace", "name", "title", "summary") and not isinstance(
        value, str
    ):
        return f"{key} must be a string, not {type_name(value)}"
    if key == "dsl" and not (SEMVER.match(str(value)) and str(value).startswith("1.0.")):
        return f"dsl {value!r} is not supported: workflowd reads DSL 1.0.x, e.g. '1.0.0'"
    if key == "version" and not SEMVER.match(str(value)):
        return f"version {value!r} must be a semantic version such as '1.0.0'"
    if key in ("namespace", "name") and not ids.NAME.match(str(value)):
        return (
            f"{key} {value!r} must be 1-63 letters, digits or hyphens, starting and ending "
            "with a letter or digit"
        )
    if key in ("tags", "metadata") and not isinstance(value, dict):
        return f"{key} must be an object, not {type_name(value)}"
    return None


def _check_io(value: Json, pointer: str, field: str, name: str) -> list[Diagnostic]:
    section = pointer.lstrip("/")
    if (problem := expect_object(value, pointer, section)) is not None:
        return [problem]
    assert isinstance(value, dict)
    if section == "input":
        out = closed(value, pointer, ("schema", field))
        if "schema" in value:
            out += check_input_schema(value["schema"], pointer_join(pointer, "schema"))
    else:
        out = closed(value, pointer, (field,), {"schema": "output.schema is not supported yet"})
    if field in value:
        out += check_flow_expression(value[field], pointer_join(pointer, field), name)
    return out


def build_definition(document: Mapping[str, Json], tasks: TaskList) -> WorkflowDefinition:
    """The definition of a document that `check_workflow` accepted, with its `do` list."""
    head = document["document"]
    assert isinstance(head, dict)
    schema = _object(_object(document.get("input")).get("schema")).get("document")
    return WorkflowDefinition(
        dsl=str(head["dsl"]),
        namespace=str(head["namespace"]),
        name=str(head["name"]),
        version=str(head["version"]),
        do=tasks,
        title=_optional_str(head.get("title")),
        summary=_optional_str(head.get("summary")),
        input_schema=schema,
        input_from=_object(document.get("input")).get("from"),
        output_as=_object(document.get("output")).get("as"),
        timeout_s=check_timeout(document["timeout"], "")[0] if "timeout" in document else None,
        schedule=check_schedule(document["schedule"])[0] if "schedule" in document else None,
    )


def _object(value: Json) -> dict[str, Json]:
    return value if isinstance(value, dict) else {}


def _optional_str(value: Json) -> str | None:
    return value if isinstance(value, str) else None
