"""Exceptions with messages meant for users.

`InputError` is raised for bad user input (a missing file, a wrong parameter type, corrupt or NaN data). The CLI
turns it into a one-line message and exit status 2, and the runner writes no partial record for it.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input. The message names the file or field at fault."""


class UnavailableError(RuntimeError):
    """A feature cannot run on this machine (e.g. weights missing); the message says what to provide."""
