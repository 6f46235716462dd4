"""One base class for every error a user can fix: each CLI catches UserError and prints its
one-line message as a usage error, instead of keeping its own list of exception types."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input, options or data: the message is one line that says what to do."""
