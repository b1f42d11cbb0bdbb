"""The worker's AttemptSink: the executor's events become queued reports that fit the server's limits."""

from __future__ import annotations

import logging

from taskwire.v1 import worker_service_pb2 as wpb

from . import _convert
from ._context import LogLine, ProgressUpdate
from ._executor import AttemptKey
from ._limits import WireLimits
from ._outbox import Outbox
from ._outcome import Failed, Outcome

_log = logging.getLogger("taskwire.worker")


class ReportSink:
    """Queues every report in the outbox, made to fit ``limits`` (the last Welcome's).

    Attempts whose lease the server says is lost send nothing more: the executor delivers none of their
    events, and their outcome converts to no report.
    """

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox
        self.limits = WireLimits()

    def attempt_started(self, key: AttemptKey) -> None:
        # The server learns nothing from it that the dispatch did not tell it: it rides with the next frame.
        self._outbox.put(_convert.started(key), attempt=key, linger=True)

    def attempt_progress(self, key: AttemptKey, update: ProgressUpdate) -> None:
        self._put(_convert.progress(key, update), key, droppable=True)

    def attempt_log(self, key: AttemptKey, line: LogLine) -> None:
        self._put(_convert.log(key, line), key, droppable=True)

    def attempt_finished(self, key: AttemptKey, outcome: Outcome) -> None:
        report, fitted = self.limits.fit_report(key, outcome)
        if isinstance(fitted, Failed) and fitted is not outcome:
            _log.warning("attempt %s failed: %s", key, fitted.error.message)
        if report is not None:
            self._put(report, key)

    def _put(self, message: wpb.WorkerMessage, key: AttemptKey, *, droppable: bool = False) -> None:
        fitted = self.limits.fit_message(message)
        if fitted is not None:
            self._outbox.put(fitted, attempt=key, droppable=droppable)
