"""A package's public names, loaded on first use: what importing the package costs is only what is used.

Each package keeps a table of where its names live and gets a module `__getattr__` (PEP 562) from
`lazy_names`; a name, once loaded, is cached in the package's namespace. The type checker sees the names
through the package's `TYPE_CHECKING` imports instead, so a name missing from them is an error there.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any


def lazy_names(
    package: str, namespace: MutableMapping[str, Any], where: Mapping[str, tuple[str, str]]
) -> Callable[[str], Any]:
    """The `__getattr__` of `package`: `where` maps each public name to (relative module, name there)."""

    def load(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attribute = where[name]
        value = getattr(importlib.import_module(module, package), attribute)
        namespace[name] = value  # the next use finds it without this call
        return value

    return load
