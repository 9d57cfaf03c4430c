"""Reports: run folders with CSV tables, figures and one self-contained HTML page."""

from densevis.report.build import write_run
from densevis.report.html import Figure, Section, render_page

__all__ = ["Figure", "Section", "render_page", "write_run"]
