"""The two progress types every stage shares (one definition, imported everywhere).

* :data:`Progress`: a callback a long computation calls with the number of steps just
  done (``tick(1)``); library code takes ``progress: Progress | None``.
* :class:`ProgressUI`: something that makes such callbacks, ``ui.progress(total, desc,
  unit)`` giving a context manager whose value is the callback (the CLI's progress bars;
  library calls take ``progress``/``ui`` of this type and never draw bars themselves).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

#: called with the number of steps just done
Progress = Callable[..., object]


class ProgressUI(Protocol):
    def progress(self, total: int | None, desc: str, unit: str = "it") -> AbstractContextManager[Callable[..., Any]]:
        ...
