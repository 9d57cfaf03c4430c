"""One self-contained HTML page: sections of text, pandas tables and PNG figures as data URIs.

The page has no external references (its one small script, styles and images are inline), so it
opens from a mail attachment. It opens with the answers block (``id="answers"``), then a table of
contents linking every section and table; tables are collapsed (``<details>``) unless a section
shows them open, and each can be sorted by a click on a column head and filtered by a text box.

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
figure { display: inline-block; margin: 0.5em; vertical-align: top; max-width: 100%;
         overflow-x: auto; }  /* a figure wider than the page scrolls, at 100% */
figcaption { font-size: 0.85em; color: #555; max-width: 600px; }
figure img { max-width: none; } img { max-width: 100%; }
.note { color: #555; font-size: 0.9em; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 0.8em; }
#answers { background: #fafafa; border: 1px solid #bbb; padding: 0.4em 1.2em; }
#answers h2 { margin-top: 0.4em; }
#answers li.answer { margin: 0.6em 0; } #answers ul.evidence { margin: 0.2em 0; font-size: 0.9em; }
.verdict { font-weight: bold; padding: 0 0.4em; border-radius: 3px; }
.verdict.supported { background: #c8e6c9; } .verdict.rejected { background: #ffcdd2; }
.verdict.inconclusive, .verdict.mixed { background: #fff3c4; }
nav.toc ol { columns: 2; font-size: 0.9em; } details > summary { cursor: pointer; margin: 0.4em 0; }
th { cursor: pointer; } input.filter { margin: 0.3em 0; width: 20em; }
.tablewrap { overflow-x: auto; }
"""
#: Sorting (click a column head) and filtering (rows holding the typed text) of every table.
SCRIPT = """
document.querySelectorAll('table.data').forEach(function (table) {
  var body = table.tBodies[0];
  table.querySelectorAll('th').forEach(function (th, column) {
    th.addEventListener('click', function () {
      var up = th.dataset.order !== 'up'; th.dataset.order = up ? 'up' : 'down';
      var rows = Array.from(body.rows), key = function (row) {
        var text = row.cells[column].textContent, number = parseFloat(text);
        return text !== '' && !isNaN(number) && isFinite(text) ? number : text; };
      rows.sort(function (a, b) { var x = key(a), y = key(b);
        if (typeof x !== typeof y) { x = String(x); y = String(y); }
        return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1); });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
  var box = table.parentNode.querySelector('input.filter');
  if (box) box.addEventListener('input', function () {
    var words = box.value.toLowerCase().split(/\\s+/).filter(Boolean);
    Array.from(body.rows).forEach(function (row) {
      var text = row.textContent.toLowerCase();
      row.style.display = words.every(function (w) { return text.indexOf(w) >= 0; }) ? '' : 'none';
    });
  });
});
"""


@dataclass
class Figure:
    """A PNG image and its caption."""

    png: bytes
    caption: str = ""


@dataclass
class Table:
    """A table of a section: its title (the table of contents' entry) and whether it starts
    open (the details tables start collapsed)."""

    frame: pd.DataFrame
    title: str = ""
    open: bool = False


@dataclass
class Section:
    """A report section: heading, an introduction, tables (a bare DataFrame is an untitled,
    open table), figures and optional preformatted text."""

    heading: str
    text: str = ""
    tables: list = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    preformatted: str = ""

    @property
    def anchor(self) -> str:
        return slug(self.heading)


def slug(text: str) -> str:
    """An HTML id from a heading: ``"Sanity checks (Adebayo)"`` -> ``"sanity-checks-adebayo"``."""
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


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
    head = "".join(f"<th title='sort'>{html.escape(str(c))}</th>" for c in table.columns)
    verdicts = table["verdict"] if "verdict" in table.columns else [""] * len(table)
    rows = "".join(
        f"<tr class='{html.escape(str(v))}'>" + "".join(_td(x) for x in row)
        + "</tr>" for v, row in zip(verdicts, table.itertuples(index=False)))
    return f"<table class='data'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _tables(section: Section) -> list[Table]:
    return [t if isinstance(t, Table) else Table(t, open=True) for t in section.tables]


def _table_anchor(section: Section, k: int, table: Table) -> str:
    return f"{section.anchor}-{slug(table.title) or k + 1}"


def _contents(sections: list[Section]) -> str:
    items = []
    for section in sections:
        titled = [(k, t) for k, t in enumerate(_tables(section)) if t.title]
        sub = "".join(f"<li><a href='#{_table_anchor(section, k, t)}'>{html.escape(t.title)}"
                      f"</a> ({len(t.frame)} rows)</li>" for k, t in titled)
        items.append(f"<li><a href='#{section.anchor}'>{html.escape(section.heading)}</a>"
                     + (f"<ul>{sub}</ul>" if sub else "") + "</li>")
    return f"<nav class='toc' id='contents'><h2>Contents</h2><ol>{''.join(items)}</ol></nav>"


def answers_html(answers, facts: list[str]) -> str:
    """The answers block: one item per answer (question, verdict, evidence), then the facts.

    ``answers``: objects with ``question``, ``verdict``, ``basis`` and ``evidence`` (see
    :class:`densevis.report.answers.Answer`)."""
    items = "".join(
        f"<li class='answer'><b>{html.escape(a.question)}</b> <span class='verdict "
        f"{html.escape(a.verdict)}'>{html.escape(a.verdict)}</span> <span class='note'>"
        f"({html.escape(a.basis)})</span><ul class='evidence'>"
        + "".join(f"<li>{html.escape(line)}</li>" for line in a.evidence) + "</ul></li>"
        for a in answers)
    facts_line = f"<p class='note'>{html.escape('; '.join(facts))}</p>" if facts else ""
    return f"<section id='answers'><h2>Answers</h2><ol>{items}</ol>{facts_line}</section>"


def render_page(title: str, sections: list[Section], lead: str = "") -> str:
    """The whole page as a string: the title, ``lead`` (trusted HTML, e.g. :func:`answers_html`),
    the table of contents, then the sections."""
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>", lead, _contents(sections)]
    for section in sections:
        parts.append(f"<section id='{section.anchor}'><h2>{html.escape(section.heading)}</h2>")
        if section.text:
            parts.extend(f"<p>{html.escape(paragraph)}</p>"
                         for paragraph in section.text.split("\n\n"))
        for k, table in enumerate(_tables(section)):
            body = (f"<div class='tablewrap'><input class='filter' type='search' "
                    f"placeholder='filter rows'>{_table_html(table.frame)}</div>")
            title = html.escape(table.title or f"table ({len(table.frame)} rows)")
            parts.append(f"<details id='{_table_anchor(section, k, table)}'"
                         f"{' open' if table.open else ''}><summary>{title} "
                         f"({len(table.frame)} rows)</summary>{body}</details>")
        for figure in section.figures:
            data = base64.b64encode(figure.png).decode("ascii")
            parts.append(f"<figure><img alt='{html.escape(figure.caption)}' "
                         f"src='data:image/png;base64,{data}'><figcaption>"
                         f"{html.escape(figure.caption)}</figcaption></figure>")
        if section.preformatted:
            parts.append(f"<pre>{html.escape(section.preformatted)}</pre>")
        parts.append("</section>")
    parts.append(f"<script>{SCRIPT}</script></body></html>")
    return "\n".join(parts)
