"""APIFuture: the result of a request that is still running (Tinker's name and surface).

Every client call returns one at once; `.result(timeout)` blocks, `await` suspends, and
`.future()` gives the underlying concurrent.futures.Future. Submitting several calls before
waiting on any is how a loop keeps one request in every clock cycle.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
U = TypeVar("U")


class APIFuture(Generic[T]):
    """A pending result."""

    def __init__(self, inner: concurrent.futures.Future[Any], convert: Callable[[Any], T]) -> None:
        self._inner = inner
        self._convert = convert
        self._converted: concurrent.futures.Future[T] = concurrent.futures.Future()
        inner.add_done_callback(self._on_done)

    @classmethod
    def completed(cls, value: T) -> APIFuture[T]:
        """A future that already holds `value`."""
        inner: concurrent.futures.Future[Any] = concurrent.futures.Future()
        inner.set_result(value)
        return cls(inner, lambda v: v)

    def _on_done(self, inner: concurrent.futures.Future[Any]) -> None:
        try:
            self._converted.set_result(self._convert(inner.result()))
        except BaseException as exc:
            self._converted.set_exception(exc)

    def result(self, timeout: float | None = None) -> T:
        """Block until the result arrives (or `timeout` seconds pass) and return it."""
        return self._converted.result(timeout)

    def done(self) -> bool:
        """Whether the result (or error) has arrived."""
        return self._converted.done()

    def future(self) -> concurrent.futures.Future[T]:
        """The concurrent.futures.Future holding the converted result."""
        return self._converted

    def then(self, convert: Callable[[T], U]) -> APIFuture[U]:
        """A future of `convert` applied to this one's result."""
        return APIFuture(self._converted, convert)

    async def result_async(self) -> T:
        """Await the result."""
        return await asyncio.wrap_future(self._converted)

    def __await__(self) -> Generator[Any, None, T]:
        return self.result_async().__await__()
