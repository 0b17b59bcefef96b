"""Name -> object registries, so configs select models, losses, etc. by name."""

from typing import Any, Callable, Iterable


class Registry:
  """A mapping from names to objects with a helpful error for unknown names."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: dict[str, Any] = {}

  def register(self, name: str) -> Callable[[Any], Any]:
    def decorator(obj: Any) -> Any:
      if name in self._entries:
        raise ValueError(f"{self.kind} '{name}' is registered twice.")
      self._entries[name] = obj
      return obj
    return decorator

  def get(self, name: str) -> Any:
    try:
      return self._entries[name]
    except KeyError:
      raise KeyError(
          f"Unknown {self.kind} '{name}'. Known: {', '.join(self.names())}."
      ) from None

  def names(self) -> Iterable[str]:
    return sorted(self._entries)

  def __contains__(self, name: str) -> bool:
    return name in self._entries
