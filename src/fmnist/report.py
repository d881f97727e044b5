"""Reports: a run's report.html, and a study's summary.json, report.md and report.html.

HTML reports are self-contained (figures embedded as data URIs) so they can be mailed or archived.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from .data import CLASSES
from .files import write_text

RUN_FIGURES = (("curves.png", "Training and validation curves"),
               ("confusion.png", "Confusion matrix (test set)"),
               ("samples.png", "Sample test predictions"),
               ("misclassified.png", "Most confidently misclassified test images"))

STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
         "th:first-child,td:first-child{text-align:left}img{max-width:100%}.flag{color:#a00}")


def _img(path: Path) -> str:
    if not path.is_file():
        return f"<p><em>missing figure {html.escape(path.name)}</em></p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def html_table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _flags_html(flags: list[str]) -> str:
    if not flags:
        return "<p>No problems found.</p>"
    return "<ul>" + "".join(f'<li class="flag">{html.escape(f)}</li>' for f in flags) + "</ul>"


def html_page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")


def per_class_rows(metrics: dict) -> list[list]:
    rep = metrics["classification_report"]
    rows = []
    for name in (*CLASSES, "macro avg", "weighted avg"):
        r = rep[name]
        rows.append([name, f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1-score']:.3f}",
                     int(r["support"])])
    return rows


def _target_rows(target: dict | None) -> list[list[str]]:
    if not target:
        return []
    when = (f"epoch {target['epoch']}, {target['seconds']:.1f} s" if target["reached"] else "not reached")
    return [[f"validation accuracy {target['val_accuracy']:.4f} reached", when]]


def write_run_report(run_dir: Path, config: dict, metrics: dict, flags: list[str]) -> None:
    summary = html_table(["metric", "value"], [
        ["model", config["model"]],
        ["test accuracy", f"{metrics['test_accuracy']:.4f}"],
        ["test loss", f"{metrics['test_loss']:.4f}"],
        ["top-2 accuracy", f"{metrics['top2_accuracy']:.4f}"],
        ["epochs / batch size / lr", f"{config['epochs']} / {config['batch_size']} / {config['lr']}"],
        ["recipe", config.get("recipe") or "none"],
        ["training seconds", f"{metrics.get('train_seconds', 0):.1f}"],
    ] + _target_rows(metrics.get("target")))
    confused = html_table(["true", "predicted", "count"],
                      [[p["true"], p["predicted"], p["count"]] for p in metrics["most_confused"]])
    body = (f"<h2>Summary</h2>{summary}<h2>Diagnostics</h2>{_flags_html(flags)}"
            f"<h2>Per class (test)</h2>{html_table(['class', 'precision', 'recall', 'F1', 'support'], per_class_rows(metrics))}"
            f"<h2>Most confused pairs</h2>{confused}")
    body += "".join(f"<h2>{title}</h2>{_img(run_dir / name)}" for name, title in RUN_FIGURES)
    write_text(run_dir / "report.html", html_page(f"fmnist run: {config['model']}", body))


COMPARE_HEADER = ["model", "params", "epochs", "batch", "train acc", "val acc", "test acc",
                  "test loss", "train s"]


def _compare_rows(models: list[dict]) -> list[list]:
    return [[m["name"], f"{m['params']:,}", m["epochs"], m["batch_size"],
             f"{m['train_accuracy']:.2%}", f"{m['val_accuracy']:.2%}", f"{m['test_accuracy']:.2%}",
             f"{m['test_loss']:.4f}", f"{m['train_seconds']:.0f}"] for m in models]


def write_study_report(out: Path, models: list[dict], metrics: dict[str, dict], flags: list[str]) -> None:
    """report.md and a self-contained report.html; figures val_curves.png and f1.png in `out`."""
    rows = _compare_rows(models)
    f1_header = ["class", *[m["name"] for m in models]]
    f1_rows = [[c, *[f"{metrics[m['name']]['classification_report'][c]['f1-score']:.3f}" for m in models]]
               for c in CLASSES]
    md = ["# fmnist study", "", "Test figures are from each model's best checkpoint, chosen on the "
          "validation split; the test set is used only for this final evaluation.", "",
          "## Comparison", "", md_table(COMPARE_HEADER, rows), "", "## Diagnostics", ""]
    md += [f"- {f}" for f in flags] or ["No problems found."]
    md += ["", "## Validation curves", "", "![validation curves](val_curves.png)", "",
           "## Per-class F1 (test)", "", "![per-class F1](f1.png)", "", md_table(f1_header, f1_rows), "",
           "## Confusion matrices", ""]
    md += [f"### {m['name']}\n\n![{m['name']} confusion]({Path(m['run_dir']).name}/confusion.png)\n"
           for m in models]
    write_text(out / "report.md", "\n".join(md) + "\n")

    body = (f"<p>Test figures are from each model's best checkpoint, chosen on the validation split.</p>"
            f"<h2>Comparison</h2>{html_table(COMPARE_HEADER, rows)}<h2>Diagnostics</h2>{_flags_html(flags)}"
            f"<h2>Validation curves</h2>{_img(out / 'val_curves.png')}"
            f"<h2>Per-class F1 (test)</h2>{_img(out / 'f1.png')}{html_table(f1_header, f1_rows)}"
            "<h2>Confusion matrices</h2>")
    body += "".join(f"<h3>{html.escape(m['name'])}</h3>{_img(Path(m['run_dir']) / 'confusion.png')}"
                    for m in models)
    write_text(out / "report.html", html_page("fmnist study", body))
