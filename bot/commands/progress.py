"""What ``wishbot apply`` shows while it runs.

On a terminal (``rich``): a live block at the bottom that never gets wider
than the terminal (it follows a resize) — "image N of M" with the image's
path, the current step, and one bar for every byte the run downloads, with
speed and time left. It vanishes when the run ends, so the report that
follows starts on a clean line; failures and recovery steps stay above it.

Elsewhere (a pipe, a CI log, ``TERM=dumb``): plain lines, one per step, no
``\\r``, no colour, no escape sequences.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Self, TextIO

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Column
from rich.text import Text

from bot.core.plan import ImageChange, Plan
from bot.core.render import human_size

_DIGEST = re.compile(r"sha256:([0-9a-f]{12})[0-9a-f]{52}")
#: step lines that stay on screen (the live block shows the others only while current)
_LASTING = ("FAILED", "recovery:")


def short_digests(line: str) -> str:
    """``sha256:<64 hex>`` -> its first 12 hex digits (as ``docker images`` shows them)."""
    return _DIGEST.sub(r"\1", line)


class ApplyDisplay(ABC):
    """The progress of one apply run: step lines, layer bytes, image N of M.

    Use as a context manager; :meth:`step`, :meth:`meter` and the
    :class:`~bot.publisher.apply.Watch` methods are the hooks apply calls.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.count = 0
        self.number = 0
        self.path = ""
        self.total_bytes = 0
        self._layer_bytes: dict[str, int] = {}

    # --- the hooks -----------------------------------------------------------

    def step(self, line: str) -> None:
        self._say(line)

    def meter(self, label: str, done: int, total: int) -> None:
        self._layer_bytes[label] = done
        self._bytes(self.downloaded)

    def planned(self, plan: Plan) -> None:
        self.total_bytes = plan.download_bytes

    def image(self, number: int, count: int, change: ImageChange) -> None:
        self.number, self.count, self.path = number, count, change.path
        self._image()

    @property
    def downloaded(self) -> int:
        return sum(self._layer_bytes.values())

    # --- what subclasses draw ------------------------------------------------

    @abstractmethod
    def _say(self, line: str) -> None:
        raise NotImplementedError

    def _bytes(self, done: int) -> None:
        return None

    def _image(self) -> None:
        return None

    def _start(self) -> None:
        return None

    def _stop(self) -> None:
        return None

    def __enter__(self) -> Self:
        self._start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()


class PlainDisplay(ApplyDisplay):
    """A line per step, and one per image with what is downloaded so far, the speed
    and the time left (for logs)."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(out)
        self.started = time.monotonic()

    def _say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def planned(self, plan: Plan) -> None:
        super().planned(plan)
        self.started = time.monotonic()

    def _image(self) -> None:
        line = f"image {self.number} of {self.count}: {self.path}"
        if self.total_bytes:
            done = self.downloaded
            line += f" ({human_size(done)} of {human_size(self.total_bytes)} downloaded"
            elapsed = time.monotonic() - self.started
            if done and elapsed >= 1:
                speed = done / elapsed
                left = max(0.0, (self.total_bytes - done) / speed)
                line += f", {human_size(int(speed))}/s, about {_duration(left)} left"
            line += ")"
        self._say(line)


def _duration(seconds: float) -> str:
    """``45 s``, ``3 min``, ``2 h 5 min``."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 90 else f"{minutes // 60} h {minutes % 60} min"


class _Block(Progress):
    """rich's Progress with a header line above the bar: "image N of M · path"."""

    def __init__(self, *columns: str | ProgressColumn, console: Console) -> None:
        self.header = Text("")
        self.status = Text("")
        super().__init__(*columns, console=console, transient=True, refresh_per_second=8)

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.header
        yield self.status
        yield self.make_tasks_table(self.tasks)


def _line(text: str, style: str = "") -> Text:
    return Text(text, style=style, no_wrap=True, overflow="ellipsis")


class TerminalDisplay(ApplyDisplay):
    """The live block on a terminal (``rich``)."""

    def __init__(self, out: TextIO, console: Console) -> None:
        super().__init__(out)
        self.console = console
        self.block = _Block(
            BarColumn(bar_width=None, table_column=Column(ratio=1, min_width=10)),
            DownloadColumn(table_column=Column(no_wrap=True)),
            TransferSpeedColumn(table_column=Column(no_wrap=True)),
            TimeRemainingColumn(table_column=Column(no_wrap=True)),
            console=console,
        )
        self.task: TaskID | None = None
        self._handlers: list[tuple[logging.StreamHandler[TextIO], TextIO]] = []

    def _start(self) -> None:
        self.block.start()
        # rich now routes sys.stderr above the block: so must the log handlers
        self._handlers = list(_follow_logging(self.out, sys.stderr))

    def _stop(self) -> None:
        for handler, stream in self._handlers:
            handler.setStream(stream)
        self.block.stop()

    def _say(self, line: str) -> None:
        if any(word in line for word in _LASTING):
            self.console.print(Text(short_digests(line), overflow="fold"), soft_wrap=False)
            return
        prefix = f"{self.path}: "
        status = line[len(prefix) :] if self.path and line.startswith(prefix) else line
        if self.count:
            self.block.status = _line(short_digests(status), "dim")
        else:  # before the first image: resolving, recovering
            self.block.header = _line(short_digests(status))
        self.block.refresh()

    def planned(self, plan: Plan) -> None:
        super().planned(plan)
        self.task = self.block.add_task("download", total=self.total_bytes or None)

    def _image(self) -> None:
        header = Text(f"image {self.number} of {self.count}", style="bold")
        header.append(f" · {self.path}")
        header.no_wrap, header.overflow = True, "ellipsis"
        self.block.header = header
        self.block.refresh()

    def _bytes(self, done: int) -> None:
        if self.task is not None:
            self.block.update(self.task, completed=done)


def _follow_logging(
    stream: TextIO, proxy: TextIO
) -> Iterator[tuple[logging.StreamHandler[TextIO], TextIO]]:
    """Log records written to ``stream`` go to ``proxy`` (above the live block) instead."""
    if proxy is stream:
        return
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is stream:
            previous = handler.setStream(proxy)
            if previous is not None:
                yield handler, previous


def _terminal(out: TextIO) -> Console | None:
    """A console for ``out`` if it is a terminal rich can draw on (not a pipe, not dumb).

    A pipe stays plain even when ``FORCE_COLOR`` is set (as some CI systems do):
    a log must not get a live display.
    """
    try:
        if not out.isatty():
            return None
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return None
    console = Console(file=out, highlight=False, soft_wrap=False)
    return console if console.is_terminal and not console.is_dumb_terminal else None


def apply_display(out: TextIO) -> ApplyDisplay:
    """The live block when ``out`` is a terminal; plain lines otherwise."""
    console = _terminal(out)
    return TerminalDisplay(out, console) if console else PlainDisplay(out)


def write_lines(lines: Iterable[str], out: TextIO) -> None:
    """Write ``lines``; on a terminal a line wider than it is broken at its width
    (by us, so the terminal never wraps, and what follows starts on a clean line)."""
    console = _terminal(out)
    for line in lines:
        if console is None:
            out.write(line + "\n")
        else:
            console.print(Text(line, overflow="fold"), markup=False)
    out.flush()
