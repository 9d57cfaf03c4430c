"""Benchmark targets of ``densevis bench``; each returns a flat dict of measured figures.

Each module is a command-line module (``HELP``, ``configure``, ``run``): ``densevis.cli.bench``
imports every one of them to build its parser, on every ``densevis`` command. So, as in
``densevis.cli``, torch and the project's modules are imported inside ``run`` and the
functions it calls, where the measuring starts, never at the top.
"""
