"""Safe YAML loading: YAML 1.2 core-schema scalars, no duplicate keys, no alias bombs, and a map
from each JSON pointer to the line and column where its node starts.

PyYAML's own constructors are not used: they resolve YAML 1.1 scalars (`on` → True, `1:20` → 80,
dates → `datetime.date`) and expand aliases without limit. We compose the node tree (aliases stay
shared references there, so composing is linear in the text) and build plain JSON values ourselves,
counting every node we visit, so a billion-laughs document stops after `max_nodes` nodes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import yaml

from workflowd.domain.diagnostics import Diagnostic, pointer_join
from workflowd.domain.json import MAX_SAFE_INTEGER, Json

Positions = dict[str, tuple[int, int]]

_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"

_MAX_DEPTH = 64

_MAX_DECIMAL_DIGITS = len(str(MAX_SAFE_INTEGER))


class _Core12Resolver(yaml.resolver.BaseResolver):
    """The YAML 1.2 core schema: only these plain scalars are not strings."""


_CORE_SCALARS: tuple[tuple[str, str, str], ...] = (
    (_NULL, r"^(?:~|null|Null|NULL)$", "~nN"),
    (_BOOL, r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    (_INT, r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        _FLOAT,
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
)
for _tag, _pattern, _first in _CORE_SCALARS:
    _Core12Resolver.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))
_Core12Resolver.add_implicit_resolver(_NULL, re.compile(r"^$"), [""])


class _Loader(
    yaml.reader.Reader,
    yaml.scanner.Scanner,
    yaml.parser.Parser,
    yaml.composer.Composer,
    _Core12Resolver,
):
    """Reads and composes only; construction is `_Builder`'s job."""

    def __init__(self, text: str) -> None:
        yaml.reader.Reader.__init__(self, text)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        _Core12Resolver.__init__(self)


@dataclass
class Loaded:
    """A loaded document, or `document=None` with the reasons in `diagnostics`."""

    document: Json = None
    positions: Positions = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)


class _TooManyNodes(Exception):
    pass


class _Builder:
    def __init__(self, max_nodes: int) -> None:
        self.max_nodes = max_nodes
        self.count = 0
        self.positions: Positions = {}
        self.diagnostics: list[Diagnostic] = []

    def _error(self, message: str, pointer: str, mark: yaml.Mark) -> None:
        self.diagnostics.append(Diagnostic(message, pointer, mark.line + 1, mark.column + 1))

    def build(self, node: yaml.Node, pointer: str, depth: int = 0) -> Json:
        self.count += 1
        if self.count > self.max_nodes:
            raise _TooManyNodes
        self.positions.setdefault(pointer, (node.start_mark.line + 1, node.start_mark.column + 1))
        if depth > _MAX_DEPTH:
            self._error(f"nested deeper than {_MAX_DEPTH} levels", pointer, node.start_mark)
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, pointer, depth)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                self._error(f"unsupported YAML tag {node.tag}", pointer, node.start_mark)
            items = enumerate(node.value)
            return [self.build(item, pointer_join(pointer, i), depth + 1) for i, item in items]
        assert isinstance(node, yaml.ScalarNode)
        return self._scalar(node, pointer)

    def _mapping(self, node: yaml.MappingNode, pointer: str, depth: int) -> dict[str, Json]:
        if node.tag != _MAP:
            self._error(f"unsupported YAML tag {node.tag}", pointer, node.start_mark)
        out: dict[str, Json] = {}
        for key_node, value_node in node.value:
            key = self._key(key_node, pointer)
            if key is None:
                continue
            child = pointer_join(pointer, key)
            if key in out:
                self._error(f"duplicate key {key!r}", child, key_node.start_mark)
                continue
            # An entry is located where its key is written: that is the line an editor shows.
            self.positions[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = self.build(value_node, child, depth + 1)
        return out

    def _key(self, node: yaml.Node, pointer: str) -> str | None:
        self.count += 1
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _STR:
                return self._text(node, pointer)
            found = _short(node.value) if node.value else "null"
        else:
            found = "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"
        self._error(f"mapping keys must be strings, not {found}", pointer, node.start_mark)
        return None

    def _text(self, node: yaml.ScalarNode, pointer: str) -> str:
        """A string. An escape such as `\\ud800` can leave a lone surrogate in it, which cannot
        be stored or sent as UTF-8: that is a diagnostic, and the surrogate is spelled out."""
        text = str(node.value)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            self._error(
                f"text holds a lone surrogate (\\u{ord(text[exc.start]):04x}), which is not "
                "valid Unicode",
                pointer,
                node.start_mark,
            )
            return text.encode("utf-8", "backslashreplace").decode("utf-8")
        return text

    def _scalar(self, node: yaml.ScalarNode, pointer: str) -> Json:
        text: str = node.value
        if node.tag == _STR:
            return self._text(node, pointer)
        if node.tag == _NULL:
            return None
        if node.tag == _BOOL:
            return text.lower() == "true"
        if node.tag == _INT:
            return self._integer(node, pointer)
        if node.tag == _FLOAT:
            # `.inf`, `.nan`, and literals too large for a double (`1e400`)
            if text.lower().endswith(("inf", "nan")) or not math.isfinite(value := float(text)):
                self._error(f"{_short(text)} is not a finite JSON number", pointer, node.start_mark)
                return None
            return value
        self._error(f"unsupported YAML tag {node.tag}", pointer, node.start_mark)
        return None

    def _integer(self, node: yaml.ScalarNode, pointer: str) -> int | None:
        text: str = node.value
        base = {"0o": 8, "0x": 16}.get(text[:2], 10)
        # Measured before converting: int() refuses more than 4,300 decimal digits.
        if base != 10 or len(text.lstrip("+-").lstrip("0")) <= _MAX_DECIMAL_DIGITS:
            value = int(text, base if base == 10 else 0)
            if abs(value) <= MAX_SAFE_INTEGER:
                return value
        message = (
            f"integer {_short(text)} is out of range: integers must be within "
            f"±{MAX_SAFE_INTEGER} (2**53 - 1), the largest JSON and jq carry exactly"
        )
        self._error(message, pointer, node.start_mark)
        return None


def _short(text: str) -> str:
    return text if len(text) <= 40 else f"{text[:20]}…{text[-8:]} ({len(text)} characters)"


def load(text: str, max_nodes: int) -> Loaded:
    """Compose one YAML document and build its JSON value; never raises on bad input."""
    try:
        root = _Loader(text).get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        if "expected a single document" in message:
            message = "only one YAML document is allowed (found a second '---')"
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        return Loaded(diagnostics=[Diagnostic(f"YAML: {message}", "", line, column)])
    except yaml.YAMLError as exc:
        return Loaded(diagnostics=[Diagnostic(f"YAML: {exc}")])
    except RecursionError:
        return Loaded(diagnostics=[Diagnostic("YAML: nested too deeply")])
    if root is None:
        return Loaded(diagnostics=[Diagnostic("the document is empty")])
    builder = _Builder(max_nodes)
    try:
        document = builder.build(root, "")
    except _TooManyNodes:
        message = f"YAML: more than {max_nodes} nodes after expanding aliases (alias bomb?)"
        return Loaded(diagnostics=[Diagnostic(message, "", 1, 1)])
    return Loaded(document, builder.positions, builder.diagnostics)
