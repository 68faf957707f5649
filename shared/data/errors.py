"""Input errors and the one-line reason of a failure, as reports and logs show them."""

from __future__ import annotations

import re

__all__ = ["InvalidInputError", "root_cause"]


class InvalidInputError(ValueError):
    """An input file is missing, unreadable or inconsistent with the others of its case."""


def root_cause(error: BaseException) -> str:
    """``Type: message`` of the innermost cause, or of the first error of ours (raised in ``shared``, which names the
    file and the problem) in the chain of causes. MONAI wraps transform errors in ``RuntimeError``s, and DataLoader
    workers pass the original on only inside a traceback string: both are unwrapped."""
    while error.__cause__ is not None and not type(error).__module__.startswith("shared."):
        error = error.__cause__
    text = str(error)
    if "Traceback (most recent call last)" in text:
        causes = re.findall(r"^(\w+(?:Error|Exception)): (.+)$", text, flags=re.MULTILINE)
        if causes:
            return f"{causes[0][0]}: {causes[0][1]}"
    return f"{type(error).__name__}: {text}"
