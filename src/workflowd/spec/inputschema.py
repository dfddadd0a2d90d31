"""`input.schema` at creation: the DSL's shape `{format: json, document: <JSON Schema>}`, a valid
JSON Schema 2020-12 whose patterns Python compiles and whose references all resolve inside the
document itself. A spec never makes workflowd fetch anything: not a `$ref`, not a `$schema`.

A `$ref` may point anywhere in the document (`#/const`, an unknown keyword …) and its target is
then applied as a schema, so every object of the document is checked, not only the places the
metaschema calls subschemas.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from urllib.parse import quote

from jsonschema import Draft202012Validator, SchemaError
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from workflowd.domain.diagnostics import Diagnostic, pointer_join
from workflowd.domain.json import Json
from workflowd.spec.fields import closed

METASCHEMA = "https://json-schema.org/draft/2020-12/schema"
_METASCHEMAS = (METASCHEMA, METASCHEMA + "#")
_REFERENCES = ("$ref", "$dynamicRef")
_SHAPE = "input.schema must be {format: json, document: <a JSON Schema>}"

_Path = tuple[str | int, ...]
_Objects = list[tuple[_Path, dict[str, Json]]]


def check_input_schema(value: Json, pointer: str) -> list[Diagnostic]:
    """Every problem of `input.schema` (at `pointer`), each pointing where it is written."""
    if not isinstance(value, dict):
        return [Diagnostic(_SHAPE, pointer)]
    if "resource" in value:
        return [
            Diagnostic(
                "external schemas (input.schema.resource) are not supported yet",
                pointer_join(pointer, "resource"),
            )
        ]
    out = closed(value, pointer, ("format", "document"))
    if value.get("format", "json") != "json":
        out.append(Diagnostic("input.schema.format must be json", pointer_join(pointer, "format")))
    schema = value.get("document")
    if not isinstance(schema, dict | bool):
        where = pointer_join(pointer, "document") if "document" in value else pointer
        return [*out, Diagnostic(_SHAPE, where)]
    return out + _check_document(schema, pointer_join(pointer, "document"))


def _check_document(schema: dict[str, Json] | bool, where: str) -> list[Diagnostic]:
    objects = list(_objects(schema))
    out = _dialects(objects, where)
    patterns = _patterns(objects, where)
    if patterns:  # jsonschema's own regex check would crash on some of these
        return out + patterns
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return [*out, Diagnostic(f"not a valid JSON Schema: {exc.message}", _at(where, exc.path))]
    return out + _references(schema, objects, where)


def _objects(value: Json, path: _Path = ()) -> Iterator[tuple[_Path, dict[str, Json]]]:
    if isinstance(value, dict):
        yield path, value
        for key, item in value.items():
            yield from _objects(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _objects(item, (*path, index))


def _at(where: str, path: Iterable[str | int]) -> str:
    return pointer_join(where, *path)


def _short(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:80] + "…")


def _dialects(objects: _Objects, where: str) -> list[Diagnostic]:
    message = (
        f"$schema must be {METASCHEMA} or absent: input.schema is JSON Schema 2020-12, "
        "and workflowd fetches no other metaschema"
    )
    return [
        Diagnostic(message, _at(where, (*path, "$schema")))
        for path, item in objects
        if isinstance(item.get("$schema"), str) and item["$schema"] not in _METASCHEMAS
    ]


def _patterns(objects: _Objects, where: str) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for path, item in objects:
        pattern = item.get("pattern")
        if isinstance(pattern, str) and (reason := _regex_problem(pattern)):
            out.append(Diagnostic(reason, _at(where, (*path, "pattern"))))
        keyed = item.get("patternProperties")
        for key in keyed if isinstance(keyed, dict) else ():
            if reason := _regex_problem(key):
                out.append(Diagnostic(reason, _at(where, (*path, "patternProperties", key))))
    return out


def _regex_problem(pattern: str) -> str | None:
    try:
        re.compile(pattern)
    except (re.error, OverflowError) as exc:
        reason = str(exc)
    except RecursionError:
        reason = "nested too deeply"
    else:
        return None
    return f"pattern {_short(pattern)} is not a regular expression Python can compile: {reason}"


def _references(schema: Json, objects: _Objects, where: str) -> list[Diagnostic]:
    """Each `$ref` and `$dynamicRef`, resolved the way jsonschema resolves it at run time (from
    the base URI in effect where it is written) against a registry that holds only this
    document: a `Registry()` retrieves nothing."""
    root = DRAFT202012.create_resource(schema)
    base = root.id() or ""
    # Crawled once, up front: a registry finds anchors by crawling, on every lookup otherwise.
    registry = Registry[Json]().with_resource(base, root).crawl()
    resolver = registry.resolver(base_uri=base)
    out: list[Diagnostic] = []
    for path, item in objects:
        for keyword in _REFERENCES:
            ref = item.get(keyword)
            if not isinstance(ref, str):
                continue
            try:
                root.pointer(_json_pointer(path), resolver).resolver.lookup(ref)
            except (Unresolvable, ValueError):  # ValueError: a malformed URI, `http://[x`
                message = (
                    f"{keyword} {_short(ref)} does not resolve inside this schema document: "
                    "write #/$defs/<name> (a JSON pointer) or #<anchor>; workflowd fetches "
                    "nothing from the network or the files"
                )
                out.append(Diagnostic(message, _at(where, (*path, keyword))))
    return out


def _json_pointer(path: _Path) -> str:
    """`referencing` percent-decodes pointers, so each escaped segment is percent-encoded."""
    return "".join("/" + quote(pointer_join("", part)[1:], safe="") for part in path)
