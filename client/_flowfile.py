"""Executions from a file: `taskwire submit -f flow.yaml` (YAML, or JSON, which YAML reads too).

The file is an ExecutionSpec with the proto's field names, durations in seconds (a number, or a string
with a unit: "500ms", "30s", "5m", "2h", "1d"):

    name: thumbnail
    metadata: {team: media}
    timeout: 10m                      # the whole execution
    idempotency_key: thumb-42
    tasks:
      - task_id: fetch
        handler: fetch
        input: {url: "https://example.test/cat.png"}
        timeout: 30s                  # each attempt
        retry_policy: {max_attempts: 3, initial_interval: 1s}
        priority: 7                   # and concurrency_key/limit, fairness_key, rate_limit/_key
      - task_id: resize
        handler: resize
        depends_on: [fetch]
        input: {image: {$from: fetch, path: path}, width: 128}
        schedule_to_start_timeout: 5m

Every error names the file, the line and the field's path (`flow.yaml:12: tasks[1].retry_policy.max_attempts:
must be at least 1`): the loader's own (a wrong type, an unknown field), and the checks every submit
gets (`taskwire.common.validate_execution_spec`), which are run here before anything is sent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from taskwire.common import (
    DEFAULT_PRIORITY,
    ExecutionSpec,
    Limits,
    RetryPolicy,
    TaskSpec,
    ValidationError,
    json_payload,
    validate_execution_spec,
)

from ._common import parse_seconds

_EXECUTION_FIELDS = {"name", "metadata", "timeout", "not_before", "idempotency_key", "tasks"}
_TASK_FIELDS = {
    "task_id",
    "handler",
    "input",
    "depends_on",
    "timeout",
    "retry_policy",
    "schedule_to_start_timeout",
    "priority",
    "concurrency_key",
    "concurrency_limit",
    "fairness_key",
    "rate_limit",
    "rate_limit_key",
}
_RETRY_FIELDS = {
    "max_attempts",
    "initial_interval",
    "backoff_coefficient",
    "maximum_interval",
    "non_retryable_error_types",
    "max_infrastructure_retries",
}


class FlowFileError(ValueError):
    """A flow file that cannot be submitted; the message names the file, the line and the field."""


_PLAIN_COLLECTIONS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})


@dataclass
class _Reader:
    """Reads one YAML node tree into a spec, remembering the line of every field's path."""

    source: str
    lines: dict[str, int]

    def fail(self, path: str, message: str) -> FlowFileError:
        line = self.line_of(path)
        where = f"{self.source}:{line}" if line else self.source
        return FlowFileError(f"{where}: {path or 'the file'}: {message}")

    def line_of(self, path: str) -> int:
        """The line of `path`, or of the nearest enclosing field the file has."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = re.sub(r"(\.[^.\[]+|\[\d+\])$", "", path)
        return self.lines.get("", 0)

    def value(self, node: yaml.Node, path: str, within: frozenset[int] = frozenset()) -> Any:
        """A plain Python value of `node`, recording the line of each path inside it. A tag YAML's safe
        loader does not know, a scalar its tag cannot read, or an alias to a node that holds it fails."""
        self.lines[path] = node.start_mark.line + 1
        if id(node) in within:
            raise self.fail(path, "an alias to a node that holds it (a value cannot contain itself)")
        if isinstance(node, yaml.CollectionNode) and node.tag not in _PLAIN_COLLECTIONS:
            raise self.fail(path, f"not a plain mapping or list (tag {node.tag})")
        if isinstance(node, yaml.MappingNode):
            inside = within | {id(node)}
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = str(self._scalar(key_node, path))
                result[key] = self.value(value_node, f"{path}.{key}" if path else key, inside)
            return result
        if isinstance(node, yaml.SequenceNode):
            inside = within | {id(node)}
            return [self.value(item, f"{path}[{index}]", inside) for index, item in enumerate(node.value)]
        return self._scalar(node, path)

    def _scalar(self, node: yaml.Node, path: str) -> Any:
        try:
            return yaml.safe_load(yaml.serialize(node))
        except (yaml.YAMLError, ValueError) as error:
            problem = getattr(error, "problem", None) or str(error)
            raise self.fail(path, f"not a plain YAML value ({problem})") from None


def load_flow(text: str, source: str = "<flow>", limits: Limits | None = None) -> ExecutionSpec:
    """The execution a flow file describes, checked as the server would check it."""
    reader = _Reader(source, {})
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise FlowFileError(f"{where}: not valid YAML or JSON ({getattr(error, 'problem', error)})") from None
    if node is None:
        raise FlowFileError(f"{source}: the file is empty")
    document = reader.value(node, "")
    spec = _execution(reader, document)
    try:
        return validate_execution_spec(spec, limits or Limits())
    except ValidationError as error:
        path = error.field.removeprefix("execution.").removeprefix("execution")
        raise reader.fail(path, error.problem) from None


def _execution(reader: _Reader, document: object) -> ExecutionSpec:
    fields = _mapping(reader, document, "", _EXECUTION_FIELDS)
    tasks = fields.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise reader.fail("tasks", "a list of at least one task is required")
    metadata = fields.get("metadata", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str | int | float) for v in metadata.values()):
        raise reader.fail("metadata", "must map names to strings")
    return ExecutionSpec(
        tasks=tuple(_task(reader, task, f"tasks[{index}]") for index, task in enumerate(tasks)),
        name=_string(reader, fields, "name"),
        metadata={str(key): str(value) for key, value in metadata.items()},
        timeout=_duration(reader, fields, "timeout"),
        not_before=_time(reader, fields, "not_before"),
        idempotency_key=_string(reader, fields, "idempotency_key"),
    )


def _task(reader: _Reader, document: object, path: str) -> TaskSpec:
    fields = _mapping(reader, document, path, _TASK_FIELDS)
    depends_on = fields.get("depends_on", [])
    if not isinstance(depends_on, list) or not all(isinstance(item, str) for item in depends_on):
        raise reader.fail(f"{path}.depends_on", "must be a list of task ids")
    try:
        payload = json_payload(fields.get("input"))
    except (TypeError, ValueError) as error:
        raise reader.fail(f"{path}.input", f"cannot be sent as JSON ({error})") from None
    return TaskSpec(
        handler=_string(reader, fields, "handler", path),
        task_id=_string(reader, fields, "task_id", path),
        input=payload,
        depends_on=tuple(depends_on),
        timeout=_duration(reader, fields, "timeout", path),
        retry_policy=_retry_policy(reader, fields.get("retry_policy"), f"{path}.retry_policy"),
        schedule_to_start_timeout=_duration(reader, fields, "schedule_to_start_timeout", path),
        priority=_integer(reader, fields, "priority", path, DEFAULT_PRIORITY),
        concurrency_key=_string(reader, fields, "concurrency_key", path),
        concurrency_limit=_integer(reader, fields, "concurrency_limit", path, 0),
        fairness_key=_string(reader, fields, "fairness_key", path),
        rate_limit=_string(reader, fields, "rate_limit", path),
        rate_limit_key=_string(reader, fields, "rate_limit_key", path),
    )


def _retry_policy(reader: _Reader, document: object, path: str) -> RetryPolicy:
    if document is None:
        return RetryPolicy()
    fields = _mapping(reader, document, path, _RETRY_FIELDS)
    types = fields.get("non_retryable_error_types", [])
    if not isinstance(types, list) or not all(isinstance(item, str) for item in types):
        raise reader.fail(f"{path}.non_retryable_error_types", "must be a list of error type names")
    default = RetryPolicy()
    return RetryPolicy(
        max_attempts=_integer(reader, fields, "max_attempts", path, default.max_attempts),
        initial_interval=_duration(reader, fields, "initial_interval", path) or default.initial_interval,
        backoff_coefficient=_number(reader, fields, "backoff_coefficient", path, default.backoff_coefficient),
        maximum_interval=_duration(reader, fields, "maximum_interval", path),
        non_retryable_error_types=tuple(types),
        max_infrastructure_retries=_integer(
            reader, fields, "max_infrastructure_retries", path, default.max_infrastructure_retries
        ),
    )


# ---- Fields ----------------------------------------------------------------------------------------


def _mapping(reader: _Reader, document: object, path: str, known: set[str]) -> Mapping[str, Any]:
    if not isinstance(document, dict):
        raise reader.fail(path, "must be a mapping of fields")
    for key in document:
        if key not in known:
            where = f"{path}.{key}" if path else key
            raise reader.fail(where, f"unknown field (known: {', '.join(sorted(known))})")
    return document


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _string(reader: _Reader, fields: Mapping[str, Any], key: str, path: str = "") -> str:
    value = fields.get(key, "")
    if not isinstance(value, str):
        raise reader.fail(_at(path, key), "must be a string")
    return value


def _integer(reader: _Reader, fields: Mapping[str, Any], key: str, path: str, default: int) -> int:
    value = fields.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise reader.fail(_at(path, key), "must be a whole number")
    return value


def _number(reader: _Reader, fields: Mapping[str, Any], key: str, path: str, default: float) -> float:
    value = fields.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise reader.fail(_at(path, key), "must be a number")
    return float(value)


def _duration(reader: _Reader, fields: Mapping[str, Any], key: str, path: str = "") -> timedelta | None:
    value = fields.get(key)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # a whole number past any float
            raise reader.fail(_at(path, key), f"too long: a number of {len(str(value))} digits") from None
    else:
        parsed = parse_seconds(str(value))
        if parsed is None:
            raise reader.fail(_at(path, key), f"expected seconds or a duration like 30s, 5m, 2h; got {value!r}")
        seconds = parsed
    if not math.isfinite(seconds):  # YAML's .nan, .inf and -.inf, or more digits than a float holds
        raise reader.fail(_at(path, key), f"must be a finite number of seconds; got {value!r}")
    if seconds <= 0:
        raise reader.fail(_at(path, key), "must be positive")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise reader.fail(_at(path, key), f"too long: {value!r}") from None


def _time(reader: _Reader, fields: Mapping[str, Any], key: str) -> datetime | None:
    value = fields.get(key)
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise reader.fail(key, f"expected an ISO 8601 time such as 2030-01-01T09:00:00Z; got {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
