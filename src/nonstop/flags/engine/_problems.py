"""Problems found in a flag document, and the error that carries them."""

from __future__ import annotations

from dataclasses import dataclass

from nonstop.errors import UsageError


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a flag document.

    ``path`` names where, e.g. ``features[3] "checkout": strategies[0].parameters.rollout``;
    ``message`` says what was expected, e.g. ``expected 0..100, got "150"``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class FlagDocumentError(UsageError):
    """A flag document has problems; ``problems`` lists every one of them."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        count = len(problems)
        head = f"flag document has {count} problem{'s' if count != 1 else ''}:"
        super().__init__("\n".join([head, *(f"  {p}" for p in problems)]))
