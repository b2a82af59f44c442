"""One hierarchy for errors a user can act on.

Anything a user did or fed in that Assay cannot use raises a subclass of `UserError`: the command line
prints its message as one line and exits 2, a page shows it as a sentence. Anything else is a bug: the
command line and the pages show a short message pointing at the log, never a traceback.

`UserError` subclasses `ValueError` so that code written before this hierarchy (which caught
ValueError) keeps working.
"""

from __future__ import annotations

__all__ = ["UserError", "InputError", "NameRuleError", "NotFoundError", "ConflictError"]


class UserError(ValueError):
    """Something the user can fix: bad input, a bad name, a missing dataset, a conflict."""


class InputError(UserError):
    """A file or text the user gave cannot be read as expected (names the file, line or field)."""


class NameRuleError(UserError):
    """A user-typed name breaks the naming rule (length, characters)."""


class NotFoundError(UserError, KeyError):
    """A named thing (dataset, run, map, selection, ...) does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConflictError(UserError):
    """The request collides with what is stored (a name already taken, a run already running)."""
