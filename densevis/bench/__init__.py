"""Benchmark targets of ``densevis bench``; each returns a flat dict of measured figures."""
