"""The views of `taskwire watch`: live progress bars on a terminal, plain lines or JSON lines otherwise."""

from __future__ import annotations

import json
from types import TracebackType
from typing import IO, Protocol, Self

from google.protobuf.json_format import MessageToDict
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from taskwire.common import LogLevel, Reason, State

from ._events import ExecutionTransition, TaskLog, TaskNote, TaskProgress, TaskRunTransition, WatchEvent
from ._render import STATE_STYLES, event_line, final_line

_LOG_STYLES = {LogLevel.DEBUG: "dim", LogLevel.INFO: "", LogLevel.WARNING: "yellow", LogLevel.ERROR: "red"}


class WatchView(Protocol):
    """Shows the events of one execution as they arrive, then its final state."""

    def __enter__(self) -> Self: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def show(self, event: WatchEvent) -> None: ...

    def finish(self, execution_id: str, state: State, reason: Reason | None) -> None: ...


class _NoContext:
    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


class PlainView(_NoContext):
    """One line per event, flushed at once (for pipes, files and CI logs)."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def show(self, event: WatchEvent) -> None:
        print(event_line(event), file=self._out, flush=True)

    def finish(self, execution_id: str, state: State, reason: Reason | None) -> None:
        print(final_line(execution_id, state, reason), file=self._out, flush=True)


class JsonLinesView(_NoContext):
    """One JSON object per event: the proto3 JSON form of the history entry (`MessageToDict`)."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def show(self, event: WatchEvent) -> None:
        if event.proto is not None:
            view = MessageToDict(event.proto, preserving_proto_field_name=True)
            print(json.dumps(view, ensure_ascii=False), file=self._out, flush=True)

    def finish(self, execution_id: str, state: State, reason: Reason | None) -> None:
        return None


class LiveView:
    """A progress bar per task run, log lines and transitions printed above the bars."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self._bars: dict[str, TaskID] = {}

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def _bar(self, task_id: str) -> TaskID:
        if task_id not in self._bars:
            self._bars[task_id] = self._progress.add_task(task_id, total=1.0, status="", start=False)
        return self._bars[task_id]

    def _print(self, text: str, style: str = "") -> None:
        self._progress.console.print(Text(text, style=style), soft_wrap=True)

    def show(self, event: WatchEvent) -> None:
        if isinstance(event, TaskProgress):
            bar = self._bar(event.task_id)
            self._progress.start_task(bar)
            self._progress.update(bar, completed=max(0.0, min(event.fraction, 1.0)), status=event.message)
        elif isinstance(event, TaskLog):
            self._print(f"{event.task_id} | {event.text}", _LOG_STYLES.get(event.level, ""))
        elif isinstance(event, TaskRunTransition):
            bar = self._bar(event.task_id)
            status = event.to_state.value + (f" {event.reason.code.value}" if event.reason else "")
            if event.to_state is State.RUNNING:
                self._progress.start_task(bar)
                status = f"RUNNING (attempt {event.attempt})" if event.attempt else "RUNNING"
            elif event.to_state.is_terminal:
                if event.to_state is State.SUCCESS:
                    self._progress.update(bar, completed=1.0)
                self._progress.stop_task(bar)
            self._progress.update(bar, status=status)
            self._print(event_line(event), STATE_STYLES.get(event.to_state, ""))
        elif isinstance(event, ExecutionTransition):
            self._print(event_line(event), STATE_STYLES.get(event.to_state, ""))
        elif isinstance(event, TaskNote):
            self._print(event_line(event), "yellow")
        else:
            self._print(event_line(event), "dim")

    def finish(self, execution_id: str, state: State, reason: Reason | None) -> None:
        self._progress.refresh()
        self._print(final_line(execution_id, state, reason), f"bold {STATE_STYLES.get(state, '')}".strip())
