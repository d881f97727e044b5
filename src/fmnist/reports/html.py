"""Reports: a run's report.html, and a study's summary.json, report.md and report.html.

HTML reports are self-contained (figures embedded as data URIs) so they can be mailed or archived.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

from fmnist.data import CLASSES
from fmnist.files import write_text

RUN_FIGURES = {
    "curves": "Training and validation curves",
    "confusion": "Confusion matrix (test set)",
    "samples": "Sample test predictions",
    "misclassified": "Most confidently misclassified test images",
    "top_losses": "Highest test losses (fastai's top losses)",
    "reliability": "Reliability: confidence against accuracy, before and after the temperature",
}

STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "th:first-child,td:first-child{text-align:left}img{max-width:100%}.flag{color:#a00}"
)


def img_tag(path: Path) -> str:
    if not path.is_file():
        return f"<p><em>missing figure {html.escape(path.name)}</em></p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def html_table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
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
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )


def per_class_rows(metrics: dict) -> list[list]:
    rep = metrics["classification_report"]
    rows = []
    for name in (*CLASSES, "macro avg", "weighted avg"):
        r = rep[name]
        rows.append([name, f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1-score']:.3f}", int(r["support"])])
    return rows


def _calibration_rows(cal: dict | None) -> list[list[str]]:
    if not cal:
        return []
    return [
        ["temperature (fitted on validation)", f"{cal['temperature']:.3f}"],
        ["test ECE before / after", f"{cal['ece_before']:.4f} / {cal['ece_after']:.4f}"],
        ["test NLL before / after", f"{cal['nll_before']:.4f} / {cal['nll_after']:.4f}"],
    ]


def _time_to_rows(times: dict | None) -> list[list[str]]:
    """The training seconds to each validation accuracy the run reached (curves.png draws them all)."""
    return [[f"validation accuracy {level} after", f"{s:.1f} s"] for level, s in (times or {}).items() if s is not None]


def _target_rows(target: dict | None) -> list[list[str]]:
    if not target:
        return []
    when = f"epoch {target['epoch']}, {target['seconds']:.1f} s" if target["reached"] else "not reached"
    return [[f"validation accuracy {target['val_accuracy']:.4f} reached", when]]


def write_run_report(path: Path, figures: dict[str, Path], config: dict, metrics: dict, flags: list[str]) -> None:
    """A run's self-contained report.html at `path`, with `figures` (by RUN_FIGURES' names) embedded."""
    summary = html_table(
        ["metric", "value"],
        [
            ["model", config["model"]],
            ["test accuracy", f"{metrics['test_accuracy']:.4f}"],
            ["test loss", f"{metrics['test_loss']:.4f}"],
            ["top-2 accuracy", f"{metrics['top2_accuracy']:.4f}"],
            ["epochs / batch size / lr", f"{config['epochs']} / {config['batch_size']} / {config['lr']}"],
            ["recipe", config.get("recipe") or "none"],
            ["training images excluded", f"{len(config.get('exclude') or []):,}"],
            ["training seconds", f"{metrics.get('train_seconds', 0):.1f}"],
            *_calibration_rows(metrics.get("calibration")),
        ]
        + _target_rows(metrics.get("target"))
        + _time_to_rows(metrics.get("time_to_accuracy")),
    )
    confused = html_table(
        ["true", "predicted", "count"], [[p["true"], p["predicted"], p["count"]] for p in metrics["most_confused"]]
    )
    per_class = html_table(["class", "precision", "recall", "F1", "support"], per_class_rows(metrics))
    body = (
        f"<h2>Summary</h2>{summary}<h2>Diagnostics</h2>{_flags_html(flags)}"
        f"<h2>Per class (test)</h2>{per_class}"
        f"<h2>Most confused pairs</h2>{confused}"
    )
    body += "".join(f"<h2>{title}</h2>{img_tag(figures[name])}" for name, title in RUN_FIGURES.items())
    write_text(path, html_page(f"fmnist run: {config['model']}", body))


COMPARE_HEADER = ["model", "params", "epochs", "batch", "train acc", "val acc", "test acc", "test loss", "train s"]


def _compare_rows(models: list[dict]) -> list[list]:
    return [
        [
            m["name"],
            f"{m['params']:,}",
            m["epochs"],
            m["batch_size"],
            f"{m['train_accuracy']:.2%}",
            f"{m['val_accuracy']:.2%}",
            f"{m['test_accuracy']:.2%}",
            f"{m['test_loss']:.4f}",
            f"{m['train_seconds']:.0f}",
        ]
        for m in models
    ]


STUDY_NOTE = "Test figures are from each model's best checkpoint, chosen on the validation split"
COMBINED_NOTE = (
    "; “{name}” is their ensemble: each model's calibrated probabilities averaged, with weights chosen on the "
    "same validation split (its epochs, parameters and training seconds are its members' together)"
)


def write_study_report(
    md_path: Path,
    html_path: Path,
    figures: dict[str, Path],
    models: list[dict],
    metrics: dict[str, dict],
    flags: list[str],
    audit: dict | None = None,
) -> None:
    """A study's report.md and self-contained report.html. `figures` holds the paths of
    'val_curves', 'f1' and each model's confusion matrix (by the model's name); `audit` the data
    audit's report and counts, when the same data was audited."""
    rows = _compare_rows(models)
    f1_header = ["class", *[m["name"] for m in models]]
    f1_rows = [
        [c, *[f"{metrics[m['name']]['classification_report'][c]['f1-score']:.3f}" for m in models]] for c in CLASSES
    ]
    calibration = _study_calibration(models, metrics)
    note = STUDY_NOTE + "".join(COMBINED_NOTE.format(name=m["name"]) for m in models if m.get("members"))
    md = _study_markdown(md_path, figures, models, rows, (f1_header, f1_rows), flags, note)
    md += f"\n## Calibration (test set; temperature fitted on validation)\n\n{md_table(*calibration)}\n"
    md += "\n## Networks\n\n" + "".join(
        f"### {m['name']}\n\n{_network_text(m)}\n\n{md_table(LAYER_HEADER, m['network']['layers'])}\n\n"
        for m in models
        if "network" in m
    )
    if audit:
        md += f"\n## Data audit\n\n{_audit_text(audit)} ([report]({_rel(audit['report'], md_path)}))\n"
    write_text(md_path, md)
    body = (
        f"<p>{html.escape(note)}.</p>"
        f"<h2>Comparison</h2>{html_table(COMPARE_HEADER, rows)}<h2>Diagnostics</h2>{_flags_html(flags)}"
        f"<h2>Validation curves</h2>{img_tag(figures['val_curves'])}"
        f"<h2>Per-class F1 (test)</h2>{img_tag(figures['f1'])}{html_table(f1_header, f1_rows)}"
        "<h2>Confusion matrices</h2>"
    )
    body += "".join(f"<h3>{html.escape(m['name'])}</h3>{img_tag(figures[m['name']])}" for m in models)
    body += f"<h2>Calibration (test set; temperature fitted on validation)</h2>{html_table(*calibration)}"
    body += "<h2>Networks</h2>" + "".join(
        f"<h3>{html.escape(m['name'])}</h3><p>{html.escape(_network_text(m))}</p>"
        + html_table(LAYER_HEADER, m["network"]["layers"])
        for m in models
        if "network" in m  # a summary written before networks were recorded has none
    )
    if audit:
        link = html.escape(_rel(audit["report"], html_path))
        body += f"<h2>Data audit</h2><p>{html.escape(_audit_text(audit))} (<a href='{link}'>audit report</a>)</p>"
    write_text(html_path, html_page("fmnist study", body))


LAYER_HEADER = ["layer", "type", "output", "parameters"]


def _network_text(model: dict) -> str:
    net = model["network"]
    args = ", ".join(f"{k} = {v}" for k, v in net.get("net_args", {}).items())
    return " ".join(
        part for part in (net["description"], f"From {net['origin']}.", f"Arguments: {args}." if args else "") if part
    )


def _study_markdown(
    md_path: Path,
    figures: dict[str, Path],
    models: list[dict],
    rows: list[list],
    f1: tuple[list, list],
    flags: list[str],
    note: str = STUDY_NOTE,
) -> str:
    md = ["# fmnist study", "", f"{note}; the test set is used only for this final evaluation.", ""]
    md += ["## Comparison", "", md_table(COMPARE_HEADER, rows), "", "## Diagnostics", ""]
    md += [f"- {f}" for f in flags] or ["No problems found."]
    md += ["", "## Validation curves", "", f"![validation curves]({_rel(figures['val_curves'], md_path)})", ""]
    md += ["## Per-class F1 (test)", "", f"![per-class F1]({_rel(figures['f1'], md_path)})", "", md_table(*f1), ""]
    md += ["## Confusion matrices", ""]
    md += [f"### {m['name']}\n\n![{m['name']} confusion]({_rel(figures[m['name']], md_path)})\n" for m in models]
    return "\n".join(md) + "\n"


def _rel(path: Path, page: Path) -> str:
    """`path` as a relative link from the page at `page`, so the two can move together."""
    return Path(os.path.relpath(path.absolute(), page.parent.absolute())).as_posix()


def _audit_text(audit: dict) -> str:
    return (
        f"An audit of this same data lists {audit['train']:,} likely label errors in the training set, "
        f"{audit['test']:,} in the test set and {audit['duplicates']:,} duplicate pairs: the test figures "
        "above are measured against labels that are partly wrong."
    )


def _study_calibration(models: list[dict], metrics: dict[str, dict]) -> tuple[list[str], list[list]]:
    header = ["model", "temperature", "ECE before", "ECE after", "NLL before", "NLL after"]
    rows = []
    for m in models:
        cal = metrics[m["name"]].get("calibration")
        if cal:
            keys = ("ece_before", "ece_after", "nll_before", "nll_after")
            rows.append([m["name"], f"{cal['temperature']:.3f}", *(f"{cal[k]:.4f}" for k in keys)])
    return header, rows
