"""A name -> object registry: register where you define, fail on duplicates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from tlhub.errors import ConfigError, closest

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; ``@REG.register("name")`` adds one where it is defined."""

    def __init__(self, kind: str, config_key: str) -> None:
        self.kind = kind
        self.config_key = config_key
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        if name not in self._items:
            raise ConfigError(
                f"{self.config_key}: unknown {self.kind} '{name}'{closest(name, self._items)}; "
                f"choose one of: {', '.join(sorted(self._items))}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._items)

    def in_order(self) -> list[str]:
        """The registered names in the order they were registered."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
