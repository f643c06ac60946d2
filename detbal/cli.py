"""The ``detbal`` command line: a thin layer, one subcommand per stage.

Each stage module exposes ``register(subparsers)``, which adds its subcommands with
``set_defaults(handler=fn)``; a handler takes ``(args, ui)`` and returns an exit
code.  Only this module configures logging and draws progress bars; the library
receives progress callbacks from :class:`UI`.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from detbal import __version__
from detbal.errors import DetbalError

#: the cyclic garbage collector's first threshold while a command runs (Python's default is
#: 700).  A command imports numpy, scipy, numba and matplotlib as it goes: some 190,000
#: long-lived objects, which the default settings walk again and again (about 500 young and
#: 4 full collections, 0.3-0.6 s of CPU in a paper-scale ``detbal analyze``).  Collecting
#: every 20,000 allocations instead leaves about 20 young collections and no full one;
#: cycles are still collected (peak memory unchanged).  Restored when :func:`main` returns.
GC_THRESHOLD = 20_000

#: modules that add subcommands, in the order of the data flow
STAGES = (
    "detbal.agents.cli",  # run, runs, demo
    "detbal.analysis.cli",  # analyze, import, export, synth
    "detbal.evo.cli",  # discover, compare
)


class UI:
    """What the CLI injects into the library: progress bars and messages."""

    def __init__(self, quiet: bool = False, stream: Any = None) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr

    def echo(self, message: str = "") -> None:
        """A line on standard output (results, summaries)."""
        print(message, flush=True)

    def note(self, message: str) -> None:
        """A line on standard error (status, hints)."""
        if not self.quiet:
            print(message, file=self.stream, flush=True)

    @contextmanager
    def progress(self, total: int | None, desc: str, unit: str = "it") -> Iterator[Callable[..., Any]]:
        """Yield ``update(n=1, **postfix)``; a tqdm bar on a terminal, silent otherwise."""
        if self.quiet:
            yield lambda n=1, **postfix: None
            return
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, leave=False,
                   disable=None, dynamic_ncols=True)

        def update(n: int = 1, **postfix: Any) -> None:
            if postfix:
                bar.set_postfix(postfix, refresh=False)
            bar.update(n)

        try:
            yield update
        finally:
            bar.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detbal",
        description="Detailed balance and least-action potentials for LLM-driven agents.",
    )
    parser.add_argument("--version", action="version", version=f"detbal {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    threshold = gc.get_threshold()
    if threshold[0]:  # 0: automatic collection is off, leave it so
        gc.set_threshold(max(GC_THRESHOLD, threshold[0]), *threshold[1:])
    try:
        return _main(argv)
    finally:
        gc.set_threshold(*threshold)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    ui = UI(quiet=args.quiet)
    try:
        return int(handler(args, ui) or 0)
    except DetbalError as exc:
        print(f"detbal: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("detbal: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
