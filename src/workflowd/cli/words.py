"""The daemon's words in the CLI's: a message that names an RPC or a request field names the
command or flag a CLI user types instead.

The daemon speaks its API (`activate it with ScheduleWorkflow`, `catchup_window: must be …`),
which is right for a program calling it. The CLI names the command for an RPC (a whole word,
spelled as no other word is) and the flag for the field a refusal is about, and leaves
everything else as the daemon said it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

COMMANDS = {
    "ApplyRetention": "`workflowd retention apply`",
    "ArchiveWorkflow": "`workflowd workflows archive REF`",
    "BackfillWorkflow": "`workflowd backfill REF`",
    "CancelRun": "`workflowd runs cancel RUN`",
    "CreateWorkflow": "`workflowd apply -f FILE`",
    "DeleteRun": "`workflowd runs delete RUN`",
    "DeleteWorkflow": "`workflowd workflows delete REF`",
    "GetRetentionPolicy": "`workflowd retention show`",
    "GetRun": "`workflowd runs get RUN`",
    "GetSchedule": "`workflowd schedules get REF`",
    "GetWorkflow": "`workflowd workflows get REF`",
    "ListRuns": "`workflowd runs list`",
    "ListSchedules": "`workflowd schedules list`",
    "ListWorkflows": "`workflowd workflows list`",
    "ScheduleWorkflow": "`workflowd schedule REF`",
    "SetRetentionPolicy": "`workflowd retention set`",
    "TriggerWorkflow": "`workflowd trigger REF`",
    "UnarchiveWorkflow": "`workflowd workflows unarchive REF`",
    "UnscheduleWorkflow": "`workflowd unschedule REF`",
    "ValidateWorkflow": "`workflowd validate -f FILE`",
    "WatchRun": "`workflowd runs watch RUN`",
    "WatchRuns": "`workflowd runs watch --all`",
}

# Request fields every command sets from the same flag; a command adds its own (`trigger_
# immediately` is `--trigger` for apply, `--trigger-now` for schedule).
FLAGS = {
    "catchup_window": "--catchup-window",
    "created_after": "--since",
    "created_before": "--until",
    "end_time": "--end",
    "idempotency_key": "--idempotency-key",
    "input": "--input",
    "page_size": "--page-size",
    "page_token": "--page-token",
    "reason": "--reason",
    "start_time": "--start",
    "tags": "--tag",
    "version": "--version",
}


def _words(names: Mapping[str, str]) -> re.Pattern[str]:
    alternatives = "|".join(sorted(map(re.escape, names), key=len, reverse=True))
    return re.compile(rf"(?<![\w`-])({alternatives})(?![\w`])")


_COMMANDS = _words(COMMANDS)


def cli_words(text: str, flags: Mapping[str, str] | None = None) -> str:
    """`text` with the RPCs it names as the commands that call them, and the request fields
    spelled as no English word is (`schedule_immediately`) as their flags."""
    text = _COMMANDS.sub(lambda found: COMMANDS[found.group(1)], text)
    fields = {name: flag for name, flag in {**FLAGS, **(flags or {})}.items() if "_" in name}
    return _words(fields).sub(lambda found: fields[found.group(1)], text)


def flag_of(field: str, flags: Mapping[str, str] | None = None) -> str:
    """The flag that set a request field (`catchup_window` → `--catchup-window`), with the place
    inside a value that a field such as `input/rows/0` points at; else the field itself."""
    known = {**FLAGS, **(flags or {})}
    name, slash, pointer = field.partition("/")
    if name not in known:
        return field
    return known[name] + (f" at /{pointer}" if slash else "")
