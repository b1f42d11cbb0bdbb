"""The conformance kit for worker authors: `taskwire-conformance --worker-cmd '...'`.

A scripted server drives a worker through every path of the worker protocol (docs/worker-protocol.md)
and prints what it expected and what the worker did. The worker under test serves the handlers of
`taskwire.conformance.handlers` (the Python agent) or their equivalents in its own language; the page
`docs/conformance.md` describes them.
"""

from ._checks import CHECKS, Check, Outcome, run_checks

__all__ = ["CHECKS", "Check", "Outcome", "run_checks"]
