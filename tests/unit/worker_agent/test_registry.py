"""Registering handlers by decorator, and loading handler modules."""

from __future__ import annotations

import re

import pytest

from taskwire.worker import (
    HandlerLoadError,
    HandlerRegistrationError,
    HandlerRegistry,
    TaskContext,
    default_registry,
    handler,
    load_handlers,
)


def test_decorator_with_a_name_registers_under_that_name() -> None:
    registry = HandlerRegistry()

    @handler("resize-image", registry=registry)
    async def resize(ctx: TaskContext) -> None:
        return None

    registered = registry.get("resize-image")
    assert registered is not None
    assert registered.fn is resize
    assert registered.is_async
    assert registered.module == __name__


def test_bare_decorator_uses_the_function_name() -> None:
    @handler
    def test_registry_bare_sync_handler(ctx: TaskContext) -> int:
        return 1

    registered = default_registry.get("test_registry_bare_sync_handler")
    assert registered is not None
    assert registered.fn is test_registry_bare_sync_handler
    assert not registered.is_async


def test_the_decorator_returns_the_function_unchanged() -> None:
    registry = HandlerRegistry()

    def original(ctx: TaskContext) -> int:
        return 7

    assert handler("x", registry=registry)(original) is original


def test_a_name_taken_by_another_function_is_refused() -> None:
    registry = HandlerRegistry()

    @handler("same", registry=registry)
    def first(ctx: TaskContext) -> None:
        return None

    def second(ctx: TaskContext) -> None:
        return None

    with pytest.raises(HandlerRegistrationError, match="already registered"):
        registry.register(second, name="same")


def test_two_lambdas_under_one_name_are_refused() -> None:
    registry = HandlerRegistry()
    registry.register(lambda ctx: 1, name="value")
    with pytest.raises(HandlerRegistrationError, match="'value' is already registered"):
        registry.register(lambda ctx: 2, name="value")
    registered = registry.get("value")
    assert registered is not None
    assert registered.fn(None) == 1


def test_registering_the_same_function_twice_is_harmless() -> None:
    registry = HandlerRegistry()

    def again(ctx: TaskContext) -> None:
        return None

    registry.register(again)
    registry.register(again)
    assert registry.names() == ["again"]


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda: None, id="no-argument"),
        pytest.param(lambda a, b: None, id="two-arguments"),
        pytest.param(42, id="not-callable"),
    ],
)
def test_a_handler_must_take_exactly_one_argument(bad: object) -> None:
    with pytest.raises(HandlerRegistrationError):
        HandlerRegistry().register(bad, name="bad")  # type: ignore[arg-type]


def test_a_callable_object_with_an_async_call_is_async() -> None:
    class Resizer:
        async def __call__(self, ctx: TaskContext) -> None:
            return None

    registered = HandlerRegistry().register(Resizer(), name="resizer")
    assert registered.is_async


def test_load_handlers_takes_every_handler_of_a_module() -> None:
    registry = load_handlers(["taskwire.worker.demo"])
    assert registry.names() == ["echo", "fail", "progress", "sleep", "spin", "sync_sleep"]


def test_load_handlers_takes_one_function_with_module_colon_function() -> None:
    registry = load_handlers(["taskwire.worker.demo:spin"])
    assert registry.names() == ["spin"]


def test_load_handlers_registers_an_undecorated_function_under_its_name() -> None:
    registry = load_handlers(["json:dumps"])
    assert registry.names() == ["dumps"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_anywhere", "cannot import handler module 'no_such_module_anywhere'"),
        ("json", "defines no handler"),
        ("taskwire.worker.demo:missing", "has no function 'missing'"),
        ("", "no handler modules given"),
    ],
)
def test_load_handlers_explains_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(HandlerLoadError, match=message):
        load_handlers([spec])


@pytest.mark.parametrize(("name", "message"), [(123, "a handler's name must be a str, got int 123")])
def test_a_handler_name_that_is_not_text_is_refused(name: object, message: str) -> None:
    with pytest.raises(TypeError, match=re.escape(message)):
        handler(name, registry=HandlerRegistry())  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="registry must be a HandlerRegistry, got str"):
        handler("x", registry="reg")  # type: ignore[call-overload]
