"""The version of the probes package, recorded in every probe file it writes (its own module, so
that the writer reads it without importing the package that imports the writer)."""

__version__ = "0.1.0"
