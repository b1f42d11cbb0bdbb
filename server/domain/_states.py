"""The vocabulary lives in `taskwire.common`; the domain's modules import it from here."""

from taskwire.common import TERMINAL_REASONS, TERMINAL_STATES, WAITING_REASONS, AttemptOutcome, ReasonCode, State

__all__ = ["TERMINAL_REASONS", "TERMINAL_STATES", "WAITING_REASONS", "AttemptOutcome", "ReasonCode", "State"]
