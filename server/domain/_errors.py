"""The error tree lives in `taskwire.common`; the domain's modules import it from here."""

from taskwire.common import InvalidTransition, TaskwireError, TerminalStateError

__all__ = ["InvalidTransition", "TaskwireError", "TerminalStateError"]
