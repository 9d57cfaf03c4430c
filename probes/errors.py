"""The one exception type for bad input to the probe generators and files."""


class ProbeError(ValueError):
    """Bad input (unknown set or parameter, impossible geometry, unreadable file).

    The message is one line that says what is wrong and how to fix it; the command line prints it
    and exits with status 2.
    """
