"""The context-manager protocol shared by the local servers ftlcloud starts (S3, PostgreSQL, and the
tests' Dask-Gateway): ``with Server(...) as s:`` starts it and always stops it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class ManagedServer(ABC):
    """A local server process: ``start()`` returns it once ready, ``stop()`` is idempotent."""

    @abstractmethod
    def start(self) -> Self:
        """Start the server and return once it answers."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the server and remove what it owns; safe to call twice."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
