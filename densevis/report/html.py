"""One self-contained HTML page: sections of text, pandas tables and PNG figures as data URIs.

The page has no external references (no scripts, styles or images outside it), so it opens from a
mail attachment.

Examples
--------
>>> import pandas as pd
>>> page = render_page("demo", [Section("Numbers", "Two rows.", tables=[pd.DataFrame({"a": [1, 2]})])])
>>> "<table" in page and "data:" not in page
True
"""

from __future__ import annotations

import base64
import html
import io
import numbers
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

STYLE = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; }
th { background: #f0f0f0; } td.number { text-align: right; }
tr.supported td { background: #e3f5e1; } tr.rejected td { background: #fbe3e3; }
tr.inconclusive td { background: #f7f3dc; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figcaption { font-size: 0.85em; color: #555; max-width: 600px; }
img { max-width: 100%; } .note { color: #555; font-size: 0.9em; } pre { background: #f6f6f6;
padding: 0.6em; overflow-x: auto; font-size: 0.8em; }
"""


@dataclass
class Figure:
    """A PNG image and its caption."""

    png: bytes
    caption: str = ""


@dataclass
class Section:
    """A report section: heading, an introduction, tables, figures and optional preformatted text."""

    heading: str
    text: str = ""
    tables: list[pd.DataFrame] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    preformatted: str = ""


def png_of(figure, tight: bool = True) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it (``tight``: trim the margins)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight" if tight else None)
    plt.close(figure)
    return buffer.getvalue()


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if value != value else f"{value:.4g}"
    return html.escape(str(value))


def _td(value) -> str:
    number = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    return f"<td class='number'>{_cell(value)}</td>" if number else f"<td>{_cell(value)}</td>"


def _table_html(table: pd.DataFrame) -> str:
    """An HTML table; rows with a ``verdict`` carry it as their CSS class (row colours)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    verdicts = table["verdict"] if "verdict" in table.columns else [""] * len(table)
    rows = "".join(
        f"<tr class='{html.escape(str(v))}'>" + "".join(_td(x) for x in row)
        + "</tr>" for v, row in zip(verdicts, table.itertuples(index=False)))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def render_page(title: str, sections: list[Section]) -> str:
    """The whole page as a string."""
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        parts.append(f"<section><h2>{html.escape(section.heading)}</h2>")
        if section.text:
            parts.extend(f"<p>{html.escape(paragraph)}</p>"
                         for paragraph in section.text.split("\n\n"))
        parts.extend(_table_html(table) for table in section.tables)
        for figure in section.figures:
            data = base64.b64encode(figure.png).decode("ascii")
            parts.append(f"<figure><img alt='{html.escape(figure.caption)}' "
                         f"src='data:image/png;base64,{data}'><figcaption>"
                         f"{html.escape(figure.caption)}</figcaption></figure>")
        if section.preformatted:
            parts.append(f"<pre>{html.escape(section.preformatted)}</pre>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
