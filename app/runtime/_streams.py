"""`ctx.streams`: the accessor for declared streams (filled in by the streams feature)."""

from __future__ import annotations

from typing import Any


class Streams:
    """`ctx.streams.<name>`; a name that no stream declares is an error naming the known ones."""

    def __init__(self, streams: dict[str, Any]) -> None:
        self._streams = streams

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._streams[name]
        except KeyError:
            known = ", ".join(sorted(self._streams)) or "none"
            raise AttributeError(f"no stream named {name!r} (declared streams: {known})") from None

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)
