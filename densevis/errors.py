"""Errors that mean "bad input": the command line prints them as one line and exits with 2."""

from probes.errors import InputError, ProbeError


class DensevisError(InputError):
    """Bad input to densevis (checkpoint, maps file, method, layer, spec...).

    The message is one line: what is wrong, where, and how to fix it. An error about one
    parameter of an API names it (see :class:`probes.errors.InputError`).
    """


#: Every exception type that is the user's input, not a bug; anything else keeps its traceback.
USER_ERRORS = (DensevisError, ProbeError)
