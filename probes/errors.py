"""The exception types for bad input to the probe generators and files."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input: the message is one line that says what is wrong and how to fix it.

    The command line prints it and exits with status 2. An error about one parameter of a
    function names that parameter (``parameter``, e.g. ``"n"``) and says what is wrong with it
    (``detail``); whoever knows how the user spelled the parameter (a command-line flag, a key
    of a spec file) rewrites the message with :meth:`naming`.

    Examples
    --------
    >>> error = InputError("must be positive (got 0)", parameter="n")
    >>> str(error), error.naming("--n")
    ('n must be positive (got 0)', '--n must be positive (got 0)')
    """

    def __init__(self, message: str, parameter: str | None = None):
        self.parameter, self.detail = parameter, message
        super().__init__(f"{parameter} {message}" if parameter else message)

    def naming(self, name: str) -> str:
        """The message with the parameter called ``name`` (unchanged without a parameter)."""
        return f"{name} {self.detail}" if self.parameter else str(self)


class ProbeError(InputError):
    """Bad input to :mod:`probes` (unknown set or parameter, impossible geometry, unreadable
    file)."""


def first_line(exc: BaseException, limit: int = 120) -> str:
    """The first line of an exception's message (a library's may span many), for one-line
    errors that quote it."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]
