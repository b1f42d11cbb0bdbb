"""Handlers by name: the ``@handler`` decorator, registries, and loading handler modules."""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar, overload

from ._errors import HandlerLoadError, HandlerRegistrationError

if TYPE_CHECKING:
    from ._context import TaskContext


class SyncHandler(Protocol):
    """A plain function run in a worker thread (or a child process)."""

    def __call__(self, ctx: TaskContext, /) -> object: ...


class AsyncHandler(Protocol):
    """An ``async def`` function run as an asyncio task (or in a child process's event loop)."""

    def __call__(self, ctx: TaskContext, /) -> Awaitable[object]: ...


class HandlerLookup(Protocol):
    """Finds a handler by the name an invocation asks for."""

    def get(self, name: str) -> RegisteredHandler | None: ...


# Any callable taking the context: a plain function or an async one (its coroutine is an object too).
_F = TypeVar("_F", bound="Callable[[TaskContext], object]")


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisteredHandler:
    """A handler function and the name it is invoked by."""

    name: str
    fn: Callable[..., object]
    is_async: bool
    module: str

    @classmethod
    def of(cls, fn: Callable[..., object], *, name: str | None = None) -> RegisteredHandler:
        """Check that ``fn`` can be called with one context argument, and describe it."""
        if not callable(fn):
            raise HandlerRegistrationError(f"a handler must be callable, got {fn!r}")
        handler_name = name if name is not None else getattr(fn, "__name__", "")
        if not isinstance(handler_name, str) or not handler_name:
            raise HandlerRegistrationError(f"handler {fn!r} needs a non-empty name")
        try:
            inspect.signature(fn).bind(object())
        except TypeError as exc:
            raise HandlerRegistrationError(
                f"handler {handler_name!r} must accept exactly one argument (ctx: TaskContext): {exc}"
            ) from exc
        except ValueError:
            pass  # Builtins without a signature: trust the caller.
        call = getattr(fn, "__call__", None)  # noqa: B004 - callable objects with an async __call__
        is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)
        return cls(name=handler_name, fn=fn, is_async=is_async, module=getattr(fn, "__module__", "") or "")


class HandlerRegistry:
    """Handlers by name. Thread-safe; a name maps to one function."""

    def __init__(self, *, handlers: Iterable[RegisteredHandler] = ()) -> None:
        self._lock = threading.Lock()
        self._handlers: dict[str, RegisteredHandler] = {}
        for registered in handlers:
            self.add(registered)

    def add(self, registered: RegisteredHandler) -> RegisteredHandler:
        """Register; the same name may only be registered again by the same function (a module reload)."""
        with self._lock:
            existing = self._handlers.get(registered.name)
            if existing is not None and not _same_function(existing, registered):
                raise HandlerRegistrationError(
                    f"handler name {registered.name!r} is already registered by "
                    f"{existing.module}.{_qualname(existing.fn)}"
                )
            self._handlers[registered.name] = registered
            return registered

    def register(self, fn: Callable[..., object], *, name: str | None = None) -> RegisteredHandler:
        """Register ``fn`` under ``name`` (default: its ``__name__``)."""
        return self.add(RegisteredHandler.of(fn, name=name))

    def get(self, name: str) -> RegisteredHandler | None:
        """The handler registered under ``name``, or None."""
        with self._lock:
            return self._handlers.get(name)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        with self._lock:
            return sorted(self._handlers)

    def from_module(self, module: str) -> list[RegisteredHandler]:
        """Handlers whose function is defined in ``module``."""
        with self._lock:
            return [h for h in self._handlers.values() if h.module == module]

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._handlers

    def __len__(self) -> int:
        with self._lock:
            return len(self._handlers)

    def __iter__(self) -> Iterator[RegisteredHandler]:
        with self._lock:
            return iter(list(self._handlers.values()))

    def __repr__(self) -> str:
        return f"<HandlerRegistry {self.names()}>"


def _qualname(fn: Callable[..., object]) -> str:
    return getattr(fn, "__qualname__", repr(fn))


def _same_function(a: RegisteredHandler, b: RegisteredHandler) -> bool:
    """The same function, or the one a reload of its module made again. Lambdas share one qualified name, so two
    of them are the same only when defined on the same line."""
    if a.fn is b.fn:
        return True
    if a.module != b.module or _qualname(a.fn) != _qualname(b.fn):
        return False
    return not _qualname(a.fn).endswith("<lambda>") or _first_line(a.fn) == _first_line(b.fn)


def _first_line(fn: Callable[..., object]) -> int | None:
    code = getattr(fn, "__code__", None)
    return getattr(code, "co_firstlineno", None)


#: The registry ``@handler`` writes to and ``taskwire-worker --handlers`` reads from.
default_registry = HandlerRegistry()


@overload
def handler(fn: _F, /) -> _F: ...


@overload
def handler(name: str | None = None, /, *, registry: HandlerRegistry | None = None) -> Callable[[_F], _F]: ...


def handler(
    name_or_fn: str | _F | None = None, /, *, registry: HandlerRegistry | None = None
) -> _F | Callable[[_F], _F]:
    """Register a handler: ``@handler("resize-image")``, or ``@handler`` to use the function's name.

    The function takes one argument, ``ctx: TaskContext``, and returns a JSON-serialisable value or a
    :class:`Payload`. It may be ``async def`` (run as an asyncio task) or plain (run in a thread).
    The function itself is returned unchanged.
    """
    target = registry if registry is not None else default_registry
    if not isinstance(target, HandlerRegistry):
        raise TypeError(f"registry must be a HandlerRegistry, got {type(target).__name__} {target!r:.100}")
    if name_or_fn is not None and not callable(name_or_fn) and not isinstance(name_or_fn, str):
        raise TypeError(f"a handler's name must be a str, got {type(name_or_fn).__name__} {name_or_fn!r:.100}")
    if callable(name_or_fn):
        target.register(name_or_fn)
        return name_or_fn
    name = name_or_fn

    def decorate(fn: _F) -> _F:
        target.register(fn, name=name)
        return fn

    return decorate


def load_handlers(specs: Iterable[str], *, source: HandlerRegistry | None = None) -> HandlerRegistry:
    """Import handler modules and return a registry of what they provide.

    Each spec is a module name (every ``@handler`` defined in it is taken) or ``module:function``
    (that one function, registered under its decorator name, or under its own name when undecorated).
    Raises HandlerLoadError for a module that cannot be imported or provides no handler.
    """
    pool = source if source is not None else default_registry
    loaded = HandlerRegistry()
    for raw_spec in specs:
        spec = raw_spec.strip()
        if not spec:
            continue
        module_name, _, attribute = spec.partition(":")
        module = _import(module_name)
        if attribute:
            fn = getattr(module, attribute, None)
            if fn is None or not callable(fn):
                raise HandlerLoadError(f"module {module_name!r} has no function {attribute!r}")
            known = [h for h in pool if h.fn is fn]
            found = known or [RegisteredHandler.of(fn)]
        else:
            found = pool.from_module(module_name)
            if not found:
                raise HandlerLoadError(f"module {module_name!r} defines no handler (decorate functions with @handler)")
        for registered in found:
            try:
                loaded.add(registered)
            except HandlerRegistrationError as exc:
                raise HandlerLoadError(str(exc)) from exc
    if not len(loaded):
        raise HandlerLoadError("no handler modules given")
    return loaded


def _import(module_name: str) -> object:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise HandlerLoadError(
                f"cannot import handler module {module_name!r}: no module named {exc.name!r}"
            ) from exc
        raise HandlerLoadError(f"handler module {module_name!r} failed to import: {exc}") from exc
    except HandlerLoadError:
        raise
    except (Exception, SystemExit) as exc:  # a module that exits as it imports, too
        raise HandlerLoadError(f"handler module {module_name!r} failed to import: {type(exc).__name__}: {exc}") from exc
