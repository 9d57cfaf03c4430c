"""Render the tables of an analysis (or of a run) as one self-contained HTML report.

FOLDER holds the CSV tables that `densevis analyze --out FOLDER` writes (metrics.csv, summary.csv,
hypotheses.csv) and, when it is a run folder, also behaviour.csv, evaluation.csv and sanity.csv.
Every image is inline (data URIs): the page opens from a mail attachment. `densevis run` writes
its report itself; use this command for `densevis analyze` output or to re-render a run.

examples:
  densevis analyze --maps maps.h5 --data base.h5 --out tables
  densevis report tables                      # writes tables/report.html
  densevis report reports/default-20261129-101500 --out review.html --force
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "render analysis or run tables (CSV) as one self-contained HTML report"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="FOLDER", help="folder holding hypotheses.csv, ...")
    parser.add_argument("--out", metavar="FILE.html",
                        help="report to write (default: FOLDER/report.html)")
    parser.add_argument("--title", default=None, help="page title (default: the folder name)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing report")


def run(args: argparse.Namespace) -> int:
    from densevis.analysis.tables import RUN_TABLES
    from densevis.errors import DensevisError
    from densevis.report.run_folder import Run
    from densevis.report.sections import report_page
    from probes.atomic import atomic_output, check_output_path

    folder = Path(args.folder)
    finished = Run(folder)  # the one reader of a run (or analysis) folder
    inputs = [folder / f"{name}.csv" for name in RUN_TABLES] + [folder / "provenance.json"]
    out = check_output_path(args.out or folder / "report.html", args.force,
                            inputs=[path for path in inputs if path.exists()])
    tables = finished.tables
    if "verdict" not in tables["hypotheses"].columns:
        raise DensevisError(f"{folder / 'hypotheses.csv'} lacks the verdict column; it is not a "
                            f"densevis hypotheses table")
    record = finished.provenance or None
    page, _, _ = report_page(args.title or f"densevis report: {folder.name}", tables, record)
    with atomic_output(out, args.force) as tmp:
        tmp.write_text(page, encoding="utf-8")
    print(f"wrote {out} ({', '.join(tables)})")
    return 0
