"""SQLite across processes: the worker processes of one database file are woken by whichever
process commits new work, through datagram sockets in a private folder of the machine (Postgres
has LISTEN/NOTIFY for this; without it they would only find new work when they next poll).

A wake-up carries nothing and may be lost (a full socket buffer, a worker just starting): the
workers' own polling stays the fallback, so a wake-up only ever makes work start sooner.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from ._process import pid_alive

# How long a sender trusts its list of receivers before it looks at the folder again.
_LIST_SECONDS = 1.0


def wakeup_folder(database: str) -> Path:
    """The folder of one database file's receivers: per user, named by the file's real path
    (short enough for a socket path, which is limited to about 100 bytes)."""
    digest = hashlib.sha256(os.path.realpath(database).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"stepwise-wake-{os.getuid()}-{digest}"


class WakeupReceiver:
    """A worker process's socket: each datagram that arrives calls `on_wake`."""

    def __init__(self, folder: Path, on_wake: Callable[[], None]) -> None:
        self.folder = folder
        self.on_wake = on_wake
        self.path = folder / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.sock"
        self._sock: socket.socket | None = None

    def open(self) -> None:
        self.folder.mkdir(mode=0o700, exist_ok=True)
        for stale in self.folder.glob("*.sock"):  # left by workers killed on this machine
            pid = stale.name.split("-", 1)[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    stale.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(str(self.path))
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._drain)

    def _drain(self) -> None:
        assert self._sock is not None
        woken = False
        while True:
            try:
                self._sock.recv(16)
                woken = True
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
        if woken:
            self.on_wake()

    def close(self) -> None:
        if self._sock is None:
            return
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            self.folder.rmdir()  # only when no other worker of this database is left


class WakeupSender:
    """Wakes every receiver of the folder but `skip` (this process's own); never blocks."""

    def __init__(self, folder: Path, skip: Path | None = None) -> None:
        self.folder = folder
        self.skip = str(skip) if skip is not None else None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._paths: list[str] = []
        self._listed_at = float("-inf")

    def notify(self) -> None:
        now = time.monotonic()
        if now - self._listed_at > _LIST_SECONDS:
            self._listed_at = now
            try:
                self._paths = [str(p) for p in self.folder.glob("*.sock") if str(p) != self.skip]
            except OSError:
                self._paths = []
        for path in list(self._paths):
            try:
                self._sock.sendto(b"w", path)
            except BlockingIOError:
                pass  # its buffer is full: that worker has wake-ups waiting already
            except (ConnectionRefusedError, FileNotFoundError):
                # Nobody reads it any more (the worker died without removing it): forget it.
                self._paths.remove(path)
                with contextlib.suppress(OSError):
                    os.unlink(path)
            except OSError:
                pass

    def close(self) -> None:
        self._sock.close()
