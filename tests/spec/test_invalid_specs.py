"""A table of invalid specifications: each refused with the expected pointer (and line)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from workflowd.domain.errors import InvalidSpecification
from workflowd.spec import Limits, parse, validate

HEAD = "document: {dsl: '1.0.0', namespace: ns, name: wf, version: '1.0.0'}\n"
CALL = "  - t:\n      call: RefreshMaterializedView\n      with: {datasetName: v}\n"


def task(body: str) -> str:
    """A spec whose single task `t` (line 3) has `body` (lines from 4) indented as a task."""
    return HEAD + "do:\n  - t:\n" + "".join(f"      {line}\n" for line in body.splitlines())


def dml(nql: str) -> str:
    return task(f"call: ExecuteDml\nwith:\n  nql: {nql}")


def cmv(with_: str) -> str:
    return task(f"call: CreateMaterializedViewIfNotExists\nwith: {with_}")


def expr(source: str) -> str:
    return task(
        f"call: RefreshMaterializedView\nwith: {{datasetName: v}}\nexport: {{as: '{source}'}}"
    )


@dataclass(frozen=True)
class Case:
    id: str
    text: str
    pointer: str
    line: int | None
    says: str


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)
)

CASES = [
    # YAML itself
    Case("yaml-syntax", HEAD + "do: [\n", "", 3, "YAML"),
    Case("duplicate-yaml-key", HEAD + "do:\n" + CALL + "do: []\n", "/do", 6, "duplicate key"),
    Case("alias-bomb", ALIAS_BOMB, "", 1, "alias bomb"),
    Case("oversize", HEAD + "do:\n" + "#" * (256 * 1024) + "\n", "", None, "limit"),
    Case("not-a-mapping-list", "- a\n- b\n", "", 1, "mapping"),
    Case("not-a-mapping-scalar", "hello\n", "", 1, "mapping"),
    Case("empty-text", "", "", None, "empty"),
    Case("multiple-documents", HEAD + "do:\n" + CALL + "---\n" + HEAD, "", 6, "one YAML document"),
    Case("non-string-key", HEAD + "do:\n" + CALL + "1: x\n", "", 6, "keys must be strings"),
    Case("yaml-1.1-tag", HEAD + "do:\n" + CALL + "x: !!binary aGk=\n", "/x", 6, "tag"),
    # top level
    Case("missing-do", HEAD, "", 1, "`do`"),
    Case("missing-document", "do:\n" + CALL, "", 1, "`document`"),
    Case("use", HEAD + "use: {functions: {}}\ndo:\n" + CALL, "/use/functions", 2, "use.functions"),
    Case("evaluate", HEAD + "evaluate: {language: jq}\ndo:\n" + CALL, "/evaluate", 2, "evaluate"),
    Case("unknown-top-key", HEAD + "extra: 1\ndo:\n" + CALL, "/extra", 2, "unknown key"),
    Case("on-is-a-key", HEAD + "on: 1\ndo:\n" + CALL, "/on", 2, "'on'"),
    Case("empty-do", HEAD + "do: []\n", "/do", 2, "at least one"),
    Case("do-not-list", HEAD + "do: {t: {}}\n", "/do", 2, "list"),
    Case(
        "too-many-tasks",
        HEAD + "do:\n" + CALL.replace("t:", "t0:") + CALL.replace("t:", "t1:"),
        "/do",
        2,
        "limit",
    ),
    Case(
        "two-key-item",
        HEAD + "do:\n  - a: {call: ExecuteDml}\n    b: {call: ExecuteDml}\n",
        "/do/0",
        3,
        "exactly one key",
    ),
    Case("duplicate-task", HEAD + "do:\n" + CALL + CALL, "/do/1/t", 6, "duplicate task name"),
    # document
    Case(
        "dsl-float",
        "document: {dsl: 1.0, namespace: ns, name: wf, version: '1.0.0'}\ndo:\n" + CALL,
        "/document/dsl",
        1,
        "quote",
    ),
    Case(
        "dsl-0.8",
        HEAD.replace("dsl: '1.0.0'", "dsl: '0.8.0'") + "do:\n" + CALL,
        "/document/dsl",
        1,
        "1.0.x",
    ),
    Case(
        "version-float",
        HEAD.replace("version: '1.0.0'", "version: 1.0") + "do:\n" + CALL,
        "/document/version",
        1,
        "quote",
    ),
    Case(
        "version-not-semver",
        HEAD.replace("version: '1.0.0'", "version: 'v1'") + "do:\n" + CALL,
        "/document/version",
        1,
        "semantic version",
    ),
    Case(
        "bad-namespace",
        HEAD.replace("namespace: ns", "namespace: my_ns") + "do:\n" + CALL,
        "/document/namespace",
        1,
        "hyphens",
    ),
    Case(
        "missing-name",
        "document: {dsl: '1.0.0', namespace: ns, version: '1.0.0'}\ndo:\n" + CALL,
        "/document",
        1,
        "`name`",
    ),
    Case(
        "document-unknown-key",
        HEAD.replace("}", ", owner: me}") + "do:\n" + CALL,
        "/document/owner",
        1,
        "unknown key",
    ),
    Case(
        "tags-not-object",
        HEAD.replace("}", ", tags: [a]}") + "do:\n" + CALL,
        "/document/tags",
        1,
        "object",
    ),
    # schedule, timeout, input, output
    Case(
        "schedule-every-too-short",
        HEAD + "schedule: {every: {milliseconds: 500}}\ndo:\n" + CALL,
        "/schedule/every",
        2,
        "between 1 second and 366 days",
    ),
    Case(
        "schedule-cron-and-every",
        HEAD + "schedule: {cron: '@daily', every: PT1H}\ndo:\n" + CALL,
        "/schedule",
        2,
        "exactly one of cron or every",
    ),
    Case(
        "cron-step-beyond-range",
        HEAD + "schedule: {cron: '*/100 * * * *'}\ndo:\n" + CALL,
        "/schedule/cron",
        2,
        "cron field 'minute' step 100 is larger than its range 0-59",
    ),
    Case(
        "cron-never-fires",
        HEAD + "schedule: {cron: '0 0 31 2 *'}\ndo:\n" + CALL,
        "/schedule/cron",
        2,
        "never fires",
    ),
    Case(
        "schedule-on",
        HEAD + "schedule:\n  on: {one: {}}\ndo:\n" + CALL,
        "/schedule/on",
        3,
        "schedule.on",
    ),
    Case(
        "schedule-after",
        HEAD + "schedule: {after: PT1M}\ndo:\n" + CALL,
        "/schedule/after",
        2,
        "schedule.after",
    ),
    Case(
        "bad-cron",
        HEAD + "schedule: {cron: '61 * * * *'}\ndo:\n" + CALL,
        "/schedule/cron",
        2,
        "cron field 'minute' value 61 is out of range 0-59",
    ),
    Case(
        "six-field-cron",
        HEAD + "schedule: {cron: '0 0 6 * * *'}\ndo:\n" + CALL,
        "/schedule/cron",
        2,
        "cron has 6 field(s) but takes 5",
    ),
    Case(
        "bad-timezone",
        HEAD + "schedule: {cron: 'CRON_TZ=Mars/Olympus 0 6 * * *'}\ndo:\n" + CALL,
        "/schedule/cron",
        2,
        "time zone",
    ),
    Case(
        "timeout-years",
        HEAD + "timeout: {after: P1Y}\ndo:\n" + CALL,
        "/timeout/after",
        2,
        "duration",
    ),
    Case("timeout-reference", HEAD + "timeout: short\ndo:\n" + CALL, "/timeout", 2, "use.timeouts"),
    Case(
        "input-schema-invalid",
        HEAD + "input:\n  schema:\n    document: {type: 12}\ndo:\n" + CALL,
        "/input/schema/document/type",
        4,
        "JSON Schema",
    ),
    Case(
        "input-schema-resource",
        HEAD + "input: {schema: {resource: {endpoint: x}}}\ndo:\n" + CALL,
        "/input/schema/resource",
        2,
        "external",
    ),
    Case(
        "output-schema",
        HEAD + "output: {schema: {document: {}}}\ndo:\n" + CALL,
        "/output/schema",
        2,
        "not supported",
    ),
    Case(
        "workflow-input-from-bad-jq",
        HEAD + "input: {from: '.a |'}\ndo:\n" + CALL,
        "/input/from",
        2,
        "syntax error",
    ),
    # task constructs workflowd does not run, and malformed control flow
    *[
        Case(f"task-{kind}", task(f"{kind}: {{}}"), f"/do/0/t/{kind}", 4, f"`{kind}`")
        for kind in ("listen", "emit", "run")
    ],
    Case("switch-empty", task("switch: []"), "/do/0/t/switch", 4, "at least one case"),
    Case(
        "switch-then-nowhere",
        task("switch:\n  - a: {when: .x, then: nowhere}"),
        "/do/0/t/switch/0/a/then",
        5,
        "names no task",
    ),
    Case(
        "switch-two-defaults",
        task("switch:\n  - a: {then: exit}\n  - b: {then: end}"),
        "/do/0/t/switch",
        4,
        "at most one default",
    ),
    Case("for-without-in", task("for: {}\ndo:\n  - a: {set: {}}"), "/do/0/t/for", 4, "`in`"),
    Case(
        "for-bad-variable",
        task("for: {in: .x, each: '1x'}\ndo:\n  - a: {set: {}}"),
        "/do/0/t/for/each",
        4,
        "not a variable name",
    ),
    Case(
        "for-unknown-variable",
        task("for: {in: .x}\ndo:\n  - a: {set: {v: '${ $color }'}}"),
        "/do/0/t/do/0/a/set/v",
        6,
        "unknown variable $color",
    ),
    Case("fork-without-branches", task("fork: {}"), "/do/0/t/fork", 4, "`branches`"),
    Case(
        "fork-branch-jumps",
        task("fork:\n  branches:\n    - a: {set: {}, then: b}\n    - b: {set: {}}"),
        "/do/0/t/fork/branches/0/a/then",
        6,
        "side by side",
    ),
    Case("try-without-catch", task("try:\n  - a: {set: {}}"), "/do/0/t", 3, "`catch`"),
    Case("try-not-list", task("try: {}\ncatch: {}"), "/do/0/t/try", 4, "must be a list"),
    Case(
        "retry-unknown",
        task("try:\n  - a: {set: {}}\ncatch: {retry: often}"),
        "/do/0/t/catch/retry",
        6,
        "use.retries",
    ),
    Case(
        "retry-too-many",
        task("try:\n  - a: {set: {}}\ncatch: {retry: {limit: {attempt: {count: 1000}}}}"),
        "/do/0/t/catch/retry/limit/attempt/count",
        6,
        "max_attempts",
    ),
    Case(
        "retry-backoff",
        task("try:\n  - a: {set: {}}\ncatch: {retry: {backoff: {quadratic: {}}}}"),
        "/do/0/t/catch/retry/backoff",
        6,
        "exponential",
    ),
    Case("set-literal-string", task("set: hello"), "/do/0/t/set", 4, "`${ … }`"),
    Case("raise-without-error", task("raise: {}"), "/do/0/t/raise", 4, "`error`"),
    Case(
        "raise-without-status",
        task("raise: {error: {type: https://example.com/e}}"),
        "/do/0/t/raise/error",
        4,
        "`status`",
    ),
    Case(
        "raise-unknown-error", task("raise: {error: late}"), "/do/0/t/raise/error", 4, "use.errors"
    ),
    Case("wait-not-duration", task("wait: soon"), "/do/0/t/wait", 4, "duration"),
    Case("wait-too-long", task("wait: P30D"), "/do/0/t/wait", 4, "max_wait_s"),
    Case("do-not-list", task("do: {}"), "/do/0/t/do", 4, "must be a list"),
    Case("two-kinds", task("set: {}\nwait: PT1S"), "/do/0/t", 3, "one kind"),
    *[
        Case(f"call-{kind}", task(f"call: {kind}\nwith: {{}}"), "/do/0/t/call", 4, f"call: {kind}")
        for kind in ("http", "grpc", "openapi", "asyncapi", "a2a", "mcp")
    ],
    Case(
        "if-not-expression",
        task("call: RefreshMaterializedView\nwith: {datasetName: v}\nif: 3"),
        "/do/0/t/if",
        6,
        "jq expression",
    ),
    Case(
        "if-bad-jq",
        task("call: RefreshMaterializedView\nwith: {datasetName: v}\nif: '.go |'"),
        "/do/0/t/if",
        6,
        "syntax error",
    ),
    Case(
        "then-nowhere",
        task("call: RefreshMaterializedView\nwith: {datasetName: v}\nthen: elsewhere"),
        "/do/0/t/then",
        6,
        "names no task",
    ),
    Case(
        "input-schema-on-task",
        task(
            "call: RefreshMaterializedView\nwith: {datasetName: v}\ninput: {schema: {document: {}}}"
        ),
        "/do/0/t/input/schema",
        6,
        "not supported",
    ),
    Case(
        "export-schema",
        task(
            "call: RefreshMaterializedView\nwith: {datasetName: v}\n"
            "export: {schema: {document: {}}}"
        ),
        "/do/0/t/export/schema",
        6,
        "not supported",
    ),
    Case(
        "unknown-operation", task("call: DropEverything\nwith: {}"), "/do/0/t/call", 4, "ExecuteDml"
    ),
    Case(
        "unknown-task-key",
        task("call: RefreshMaterializedView\nwith: {datasetName: v}\nretry: 3"),
        "/do/0/t/retry",
        6,
        "unknown key",
    ),
    Case("no-call", task("with: {datasetName: v}"), "/do/0/t", 3, "needs `call`"),
    Case("missing-with", task("call: RefreshMaterializedView"), "/do/0/t", 3, "requires `with`"),
    Case(
        "with-not-object",
        task("call: RefreshMaterializedView\nwith: [1]"),
        "/do/0/t/with",
        5,
        "object",
    ),
    Case("task-not-object", HEAD + "do:\n  - t: ExecuteDml\n", "/do/0/t", 3, "object"),
    # operation parameters
    Case(
        "bad-dataset-name",
        task("call: RefreshMaterializedView\nwith: {datasetName: my-view}"),
        "/do/0/t/with/datasetName",
        5,
        "datasetName",
    ),
    Case(
        "refresh-both",
        task("call: RefreshMaterializedView\nwith: {datasetName: a, datasetId: 1}"),
        "/do/0/t/with",
        5,
        "exactly one",
    ),
    Case(
        "refresh-neither",
        task("call: RefreshMaterializedView\nwith: {computePoolId: p}"),
        "/do/0/t/with",
        5,
        "exactly one",
    ),
    Case(
        "dataset-id-negative",
        task("call: RefreshMaterializedView\nwith: {datasetId: -3}"),
        "/do/0/t/with/datasetId",
        5,
        "positive integer",
    ),
    Case(
        "dataset-id-string",
        task("call: RefreshMaterializedView\nwith: {datasetId: '3'}"),
        "/do/0/t/with/datasetId",
        5,
        "positive integer",
    ),
    Case(
        "unknown-param",
        task("call: RefreshMaterializedView\nwith: {datasetName: a, force: true}"),
        "/do/0/t/with/force",
        5,
        "unknown parameter",
    ),
    Case(
        "execution-cluster",
        task("call: RefreshMaterializedView\nwith: {datasetName: a, executionCluster: huge}"),
        "/do/0/t/with/executionCluster",
        5,
        "shared",
    ),
    Case("dml-select", dml("SELECT 1"), "/do/0/t/with/nql", 6, "not SELECT"),
    Case("dml-create", dml("CREATE TABLE x (a INT)"), "/do/0/t/with/nql", 6, "not CREATE"),
    Case("dml-missing-nql", task("call: ExecuteDml\nwith: {}"), "/do/0/t/with", 5, "requires nql"),
    Case("dml-empty-nql", dml("''"), "/do/0/t/with/nql", 6, "non-empty"),
    Case("cmv-select-without-name", cmv("{nql: SELECT 1}"), "/do/0/t/with", 5, "datasetName"),
    Case(
        "cmv-create-with-name",
        cmv("{nql: 'CREATE MATERIALIZED VIEW v AS SELECT 1', datasetName: v}"),
        "/do/0/t/with/datasetName",
        5,
        "must not be given",
    ),
    Case(
        "cmv-insert",
        cmv("{nql: 'INSERT INTO x VALUES (1)', datasetName: v}"),
        "/do/0/t/with/nql",
        5,
        "SELECT",
    ),
    Case("cmv-nql-number", cmv("{nql: 42, datasetName: v}"), "/do/0/t/with/nql", 5, "string"),
    # expressions
    Case(
        "bad-jq-in-with",
        task("call: ExecuteDml\nwith:\n  nql: '${ \"INSERT \\(.a\" }'"),
        "/do/0/t/with/nql",
        6,
        "syntax error",
    ),
    Case("unknown-variable", expr("$secrets.token"), "/do/0/t/export/as", 6, "unknown variable"),
    Case(
        "expression-type",
        task("call: RefreshMaterializedView\nwith: {datasetName: v}\noutput: {as: 12}"),
        "/do/0/t/output/as",
        6,
        "jq expression",
    ),
    Case(
        "empty-expression",
        task("call: RefreshMaterializedView\nwith: {datasetId: '${ }'}"),
        "/do/0/t/with/datasetId",
        5,
        "empty",
    ),
    *[
        Case(f"sandbox-{name}", expr(source), "/do/0/t/export/as", 6, name)
        for name, source in (
            ("env", "env.HOME"),
            ("$ENV", "$ENV.HOME"),
            ("input", "input"),
            ("inputs", "[inputs]"),
            ("debug", "debug"),
            ("stderr", "stderr"),
            ("input_filename", "input_filename"),
            ("import", 'import "x" as x; .'),
            ("include", 'include "x"; .'),
            ("halt", "halt"),
            ("halt_error", "halt_error"),
            ("$__loc__", "$__loc__"),
            ("get_search_list", "get_search_list"),
            ("input_line_number", "input_line_number"),
        )
    ],
    Case("sandbox-in-interpolation", expr('"\\(env.HOME)"'), "/do/0/t/export/as", 6, "env"),
    Case("sandbox-$-space-ENV", expr("$ ENV.HOME"), "/do/0/t/export/as", 6, "`$ENV`"),
    Case("sandbox-via-def", expr("def f: env; f"), "/do/0/t/export/as", 6, "`env`"),
    Case("sandbox-format", expr('@json "\\(input)"'), "/do/0/t/export/as", 6, "`input`"),
    Case("sandbox-debug-1", expr("debug(.a)"), "/do/0/t/export/as", 6, "`debug`"),
    # numbers and durations
    Case(
        "integer-of-5000-digits",
        task("call: RefreshMaterializedView\nwith: {datasetId: " + "9" * 5000 + "}"),
        "/do/0/t/with/datasetId",
        5,
        "2**53 - 1",
    ),
    Case(
        "integer-beyond-2**53",
        task("call: RefreshMaterializedView\nwith: {datasetId: 9007199254740993}"),
        "/do/0/t/with/datasetId",
        5,
        "out of range",
    ),
    Case(
        "integer-in-metadata",
        HEAD.replace("}", ", metadata: {n: -" + "1" * 400 + "}}") + "do:\n" + CALL,
        "/document/metadata/n",
        1,
        "9007199254740991",
    ),
    Case(
        "float-overflow",
        HEAD.replace("}", ", metadata: {x: 1e400}}") + "do:\n" + CALL,
        "/document/metadata/x",
        1,
        "finite",
    ),
    Case(
        "timeout-days-10**400",
        HEAD + "timeout: {after: {days: 1" + "0" * 400 + "}}\ndo:\n" + CALL,
        "/timeout/after/days",
        2,
        "2**53 - 1",
    ),
    Case(
        "timeout-infinite-iso",
        HEAD + "timeout: {after: PT" + "9" * 400 + "S}\ndo:\n" + CALL,
        "/timeout/after",
        2,
        "at most 366 days",
    ),
    Case(
        "timeout-367-days",
        HEAD + "timeout: {after: {days: 367}}\ndo:\n" + CALL,
        "/timeout/after",
        2,
        "at most 366 days",
    ),
    Case(
        "task-timeout-infinite-iso",
        task(
            "call: RefreshMaterializedView\nwith: {datasetName: v}\n"
            "timeout: {after: P" + "9" * 400 + "D}"
        ),
        "/do/0/t/timeout/after",
        6,
        "at most 366 days",
    ),
    # input.schema
    Case(
        "input-schema-remote-ref",
        HEAD + "input:\n  schema:\n    document:\n      properties:\n"
        "        a: {$ref: 'http://169.254.169.254/latest'}\ndo:\n" + CALL,
        "/input/schema/document/properties/a/$ref",
        6,
        "does not resolve inside this schema document",
    ),
    Case(
        "input-schema-bad-pattern",
        HEAD + "input:\n  schema:\n    document: {type: string, pattern: '(a'}\ndo:\n" + CALL,
        "/input/schema/document/pattern",
        4,
        "not a regular expression",
    ),
    Case(
        "input-schema-metaschema",
        HEAD + "input:\n  schema:\n    document: {$schema: 'http://x/s'}\ndo:\n" + CALL,
        "/input/schema/document/$schema",
        4,
        "2020-12",
    ),
    # statements ExecuteDml refuses, named as written
    Case(
        "dml-with-select",
        dml("WITH a AS (SELECT 1) SELECT * FROM a"),
        "/do/0/t/with/nql",
        6,
        "not WITH … SELECT",
    ),
    *[
        Case(f"dml-{kw.lower()}", dml(f"{kw} {rest}"), "/do/0/t/with/nql", 6, f"not {kw}")
        for kw, rest in (
            ("INSTALL", "httpfs"),
            ("LOAD", "httpfs"),
            ("ATTACH", "'/tmp/x.db' AS x"),
            ("COPY", "company_data.t TO '/tmp/t.csv'"),
            ("SET", "threads = 1"),
            ("PRAGMA", "database_list"),
        )
    ],
]


def limits_for(case: Case) -> Limits:
    return Limits(max_tasks=1) if case.id == "too-many-tasks" else Limits()


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_invalid_spec_is_refused_where_it_is_wrong(case: Case) -> None:
    result = validate(case.text, limits_for(case))
    assert not result.valid
    assert result.definition is None
    matching = [d for d in result.diagnostics if d.pointer == case.pointer]
    assert matching, [d.render() for d in result.diagnostics]
    assert any(case.says in d.message for d in matching), [d.render() for d in matching]
    if case.line is not None:
        assert any(d.line == case.line for d in matching), [d.render() for d in matching]


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 45


def test_parse_raises_invalid_specification_with_every_diagnostic() -> None:
    text = HEAD + "use: {secrets: []}\ndo:\n  - t:\n      switch: []\n"
    with pytest.raises(InvalidSpecification) as raised:
        parse(text)
    assert [d.pointer for d in raised.value.diagnostics] == ["/use/secrets", "/do/0/t/switch"]


def test_diagnostics_are_all_collected() -> None:
    text = HEAD.replace("ns", "n_s") + "use: {secrets: []}\ndo:\n" + CALL + CALL
    pointers = {d.pointer for d in validate(text).diagnostics}
    assert pointers == {"/document/namespace", "/use/secrets", "/do/1/t"}


def test_alias_bomb_fails_fast() -> None:
    bomb = ALIAS_BOMB + "".join(f"z{i}: &z{i} [{', '.join(['*i'] * 10)}]\n" for i in range(4))
    result = validate(bomb)  # expanded, it would be billions of nodes: refused before that
    assert "alias bomb" in result.diagnostics[0].message


def test_size_is_measured_in_bytes() -> None:
    text = HEAD + "do:\n" + CALL + "# " + "é" * 200 + "\n"
    assert not validate(text, Limits(max_spec_bytes=len(text) + 100)).valid
    assert validate(text, Limits(max_spec_bytes=len(text.encode()))).valid


def test_a_lone_surrogate_escape_is_refused_where_it_stands() -> None:
    text = (
        "document: {dsl: '1.0.0', namespace: a, name: b, version: '1.0.0'}\n"
        "do:\n"
        "  - x:\n"
        "      call: ExecuteDml\n"
        "      with: {nql: \"DELETE FROM company_data.t WHERE a = '\\ud800'\"}\n"
    )
    result = validate(text)
    assert not result.valid
    assert [(d.pointer, d.line, d.message) for d in result.diagnostics] == [
        ("/do/0/x/with/nql", 5, "text holds a lone surrogate (\\ud800), which is not valid Unicode")
    ]
