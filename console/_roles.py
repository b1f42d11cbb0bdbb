"""What each role may do from the console: the one table the pages and the action handlers read.

The console hides what its caller's role may not do and refuses it itself, but the server's
own checks remain the enforcement: a button shown by mistake still meets PERMISSION_DENIED.
A console started with `--view-as ROLE` shows what ROLE may do, within what the server's role
allows (it can only take actions away, never add them).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from taskwire.client import Identity


class Action(StrEnum):
    CANCEL = "cancel"
    DELETE = "delete"
    DRAIN = "drain"


# The roles GetIdentity names, and the actions each may take here.
ALLOWED: dict[str, frozenset[Action]] = {
    "reader": frozenset(),
    "worker": frozenset(),
    "submitter": frozenset({Action.CANCEL}),  # its own executions, as the server scopes them
    "admin": frozenset(Action),
}
ROLES = tuple(ALLOWED)


@dataclass(frozen=True, slots=True)
class Viewer:
    """The console's caller as the pages show it: the server's identity, and what it may do."""

    name: str
    role: str  # the role the pages act as: the server's, or the narrower --view-as
    actions: frozenset[Action]

    def may(self, action: Action) -> bool:
        return action in self.actions


def viewer(identity: Identity, view_as: str | None = None) -> Viewer:
    """The viewer for the server's `identity`; an unknown role may do nothing."""
    actions = ALLOWED.get(identity.role, frozenset())
    role = identity.role
    if view_as is not None:
        actions = actions & ALLOWED[view_as]
        role = view_as
    return Viewer(identity.name, role, actions)
