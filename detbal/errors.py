"""User-facing errors: the CLI prints them as one line and exits non-zero."""

from __future__ import annotations


class DetbalError(Exception):
    """A problem with the user's input or environment, shown as one line."""


class InputError(DetbalError):
    """An input file is missing, unreadable or malformed."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem
