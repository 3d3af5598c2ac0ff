"""The one progress bar of dldl: a rich bar on stderr when enabled and stderr is a terminal,
otherwise nothing (logs and pipes stay clean)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


class progress_bar:
    """``with progress_bar(enabled, total, label) as bar: ... bar.advance(info)`` (or call
    ``close()`` when done instead of using ``with``).

    >>> with progress_bar(False, 3, "x") as bar:
    ...     bar.advance("loss 1.0")
    """

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self.bar = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.markup import escape
            from rich.progress import Progress

            self._escape = escape  # labels and infos hold file and split names: shown as typed, never as markup
            self.bar = Progress(*Progress.get_default_columns(), "{task.fields[info]}", transient=True,
                                console=Console(stderr=True, emoji=False))
            self.task = self.bar.add_task(escape(label), total=total, info="")
            self.bar.start()

    def __enter__(self) -> "progress_bar":
        return self

    @property
    def shown(self) -> bool:
        """Whether the bar is on screen (enabled, and stderr is a terminal)."""
        return self.bar is not None

    def advance(self, info: str = "") -> None:
        if self.bar:
            self.bar.update(self.task, advance=1, info=self._escape(info))

    def update(self, done: int, total: int, info: str = "") -> None:
        """Set the bar to ``done`` of ``total`` (for work counted in jumps)."""
        if self.bar:
            self.bar.update(self.task, completed=done, total=total, info=self._escape(info))

    def close(self) -> None:
        if self.bar:
            self.bar.stop()
            self.bar = None

    def __exit__(self, *exc: object) -> None:
        self.close()


def track(items: Iterable[T], total: int, label: str, enabled: bool = True) -> Iterator[T]:
    """Yield ``items`` while a :class:`progress_bar` counts them."""
    with progress_bar(enabled, total, label) as bar:
        for item in items:
            yield item
            bar.advance()
