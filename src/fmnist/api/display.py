"""What a run, a study, an audit or a sweep shows in a notebook: its headline figures as a small
table and its key images inline (Jupyter's `_repr_html_`), every value escaped."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from fmnist.reports.html import html_table


def image(path: Path, alt: str, width: int = 420) -> str:
    """An <img> holding the PNG itself (a notebook's output must not point at files), or nothing."""
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img src='data:image/png;base64,{data}' alt='{html.escape(alt)}' style='width:{width}px'>"


def table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(
        f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(shown(v))}</td></tr>" for k, v in rows
    )
    return f"<table>{cells}</table>"


def grid(header: list[str], rows: list[list[Any]]) -> str:
    """The reports' own table (escaped), its numbers shown as a notebook reads them."""
    return html_table(header, [[shown(c) for c in row] for row in rows])


def shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) <= 1 else f"{value:.4g}"
    return "" if value is None else str(value)


def page(title: str, *parts: str) -> str:
    return f"<div><h3>{html.escape(title)}</h3>{''.join(parts)}</div>"


def run_html(title: str, rows: list[tuple[str, Any]], figures: dict[str, Path]) -> str:
    """A run: what it is and reached, its curves and its confusion matrix side by side."""
    pictures = image(figures["curves"], "training curves") + image(figures["confusion"], "confusion matrix", 360)
    return page(title, table(rows), f"<div style='display:flex;gap:1em'>{pictures}</div>")


def study_html(title: str, header: list[str], rows: list[list[Any]], curves: Path) -> str:
    return page(title, grid(header, rows), image(curves, "validation curves", 520))


def audit_html(title: str, rows: list[tuple[str, Any]], figure: Path) -> str:
    return page(title, table(rows), image(figure, "likely label errors", 560))


def sweep_html(title: str, header: list[str], rows: list[list[Any]]) -> str:
    return page(title, grid(header, rows))
