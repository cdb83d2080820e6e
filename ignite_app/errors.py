"""The one error type a user can fix: scripts print it as a paragraph and exit with code 2."""
from __future__ import annotations


class UserError(Exception):
    """Bad input (a flag, a file, a checkpoint): say what was wrong, what was tried and what to do."""

    exit_code = 2
