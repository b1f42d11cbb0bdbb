"""References to upstream outputs inside a task's input: the one substitution rule of workflows.

Anywhere in a task's JSON input, an object whose only keys are ``"$from"`` and optionally ``"path"``
stands for the output of the task it names, which must be one of the task's ``depends_on``:

    {"$from": "fetch"}                          the whole output of task "fetch"
    {"$from": "fetch", "path": "images.0.url"}  a part of it: object keys and list indices, by dots

The server checks at submit that every reference names a dependency. The worker replaces the references
before the handler runs, from the outputs the server sends with the attempt; nothing runs on the server,
and each output crosses the wire once, however often it is referred to. A reference to a part that is
not there fails the attempt (`InputReferenceError`, not retried).

May use: the standard library only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

FROM = "$from"
PATH = "path"
# A cheap test before parsing: inputs without this text have no reference.
MARKER = b'"$from"'


class InputReferenceError(ValueError):
    """A reference in an input that cannot be resolved: an unknown task, or a path that is not there.
    Running the attempt again cannot change an upstream output: not retried."""

    retryable = False


def _reference(value: object) -> tuple[str, str] | None:
    """(task id, path) when `value` is a reference, else None."""
    if isinstance(value, dict) and FROM in value and set(value) <= {FROM, PATH}:
        task_id, path = value[FROM], value.get(PATH, "")
        if not isinstance(task_id, str) or not isinstance(path, str):
            raise InputReferenceError(f'a reference needs "{FROM}" (a task id) and an optional "{PATH}", both strings')
        return task_id, path
    return None


def references(value: object, where: str = "") -> Iterator[tuple[str, str]]:
    """Every reference in a decoded JSON value, as (where it is, task id), depth first."""
    found = _reference(value)
    if found is not None:
        yield where, found[0]
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from references(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from references(item, f"{where}[{index}]")


def resolve(value: Any, outputs: Mapping[str, Any]) -> Any:
    """`value` with every reference replaced by the (part of the) output it names."""
    found = _reference(value)
    if found is not None:
        task_id, path = found
        if task_id not in outputs:
            raise InputReferenceError(f"the input refers to task {task_id!r}, whose output was not received")
        return _walk(outputs[task_id], path, task_id)
    if isinstance(value, dict):
        return {key: resolve(item, outputs) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, outputs) for item in value]
    return value


def _walk(value: Any, path: str, task_id: str) -> Any:
    for step in filter(None, path.split(".")):
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            raise InputReferenceError(f"the output of task {task_id!r} has nothing at {path!r} (at {step!r})")
    return value
