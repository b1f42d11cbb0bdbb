"""`evolve`: a copy of a frozen record with some fields changed, as `dataclasses.replace` makes it.

The engine makes a new record at every transition, several per task. On every
call, `dataclasses.replace` walks the class's fields, builds a dict of all of
them and calls `__init__` with it by keyword. `evolve` compiles, once per class
(the way `dataclasses` compiles `__init__`), a function that copies each field
and sets the changed ones, in about half the time. The new record is checked by
its `__post_init__`, as one built by `replace` is, so a change that breaks a
record's invariants still raises. For mypy, `evolve` is `dataclasses.replace`:
its calls are checked field by field, as those of `replace` are.

It serves frozen dataclasses with slots whose fields all take part in `__init__`
(every record in `taskwire.common`); any other dataclass goes to
`dataclasses.replace`, unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

_UNSET: Any = object()
_compiled: dict[type, Callable[..., Any]] = {}
# The names the compiled function uses for itself: a class with a field of one of these names goes to `replace`.
_RESERVED = frozenset({"_record", "_made", "_UNSET", "_new", "_set", "cls"})


if TYPE_CHECKING:
    # Checked as `replace` is: mypy's dataclass plugin knows each record's fields and their types.
    from dataclasses import replace as evolve
else:

    def evolve(record, /, **changes):
        """`record` with `changes` applied, checked as `dataclasses.replace(record, **changes)` would be.

        An unknown field name raises TypeError, as it does for `replace`.
        """
        cls = type(record)
        make = _compiled.get(cls)
        if make is None:
            make = _compiled.setdefault(cls, _compile(cls))
        return make(record, **changes)


def _compile(cls: type) -> Callable[..., Any]:
    params = dataclasses.fields(cls)  # raises TypeError for a class that is not a dataclass
    own = cls.__dict__  # the decorator's own marks: a subclass it did not decorate is not plain
    options = own.get("__dataclass_params__")
    plain = (
        options is not None
        and options.frozen
        and options.init
        and "__slots__" in own
        and all(f.init for f in params)
        and len(params) == len(own["__dataclass_fields__"])  # no InitVar or ClassVar pseudo-fields
    )
    names = [f.name for f in params]
    if not plain or _RESERVED.intersection(names):
        return dataclasses.replace
    lines = [f"def evolve(_record, /, *, {', '.join(f'{name}=_UNSET' for name in names)}):", "    _made = _new(cls)"]
    lines += [f"    _set(_made, {name!r}, _record.{name} if {name} is _UNSET else {name})" for name in names]
    if hasattr(cls, "__post_init__"):
        lines.append("    _made.__post_init__()")
    lines.append("    return _made")
    scope: dict[str, Any] = {"_UNSET": _UNSET, "_new": object.__new__, "_set": object.__setattr__, "cls": cls}
    exec("\n".join(lines), scope)  # the source is built above from the class's own field names
    function: Callable[..., Any] = scope["evolve"]
    function.__qualname__ = f"evolve[{cls.__qualname__}]"
    return function


__all__ = ["evolve"]
