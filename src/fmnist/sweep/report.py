"""A sweep's trials at a glance (`fmnist sweep status`) and its report (`fmnist sweep report`):
Optuna's own plots, the trials, and the best trial's test accuracy, evaluated once, on it alone."""

from __future__ import annotations

import base64
import html
import io
import warnings
from pathlib import Path

from fmnist.errors import FmnistError
from fmnist.files import write_bytes, write_text
from fmnist.reports.html import html_page, html_table, md_table
from fmnist.run.folder import RunFolder

ORDER = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "WAITING": 3, "FAIL": 4}


def trial_rows(study) -> list[dict]:
    """Every trial, best first: finished ones by validation accuracy (pruned by their last epoch's),
    then those running or waiting, then failures."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "last_value": last,
                "epochs": t.user_attrs.get("epochs", len(t.intermediate_values)),
                "seconds": t.user_attrs.get("seconds"),
                "params": dict(t.params),
                "run_dir": t.user_attrs.get("run_dir"),
                "note": t.user_attrs.get("failed", ""),
            }
        )
    return sorted(rows, key=lambda r: (ORDER.get(r["state"], 5), -(r["value"] or r["last_value"] or 0), r["number"]))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def status_table(study) -> tuple[list[str], list[list[str]]]:
    rows = trial_rows(study)
    names = sorted({k for r in rows for k in r["params"]})
    header = ["trial", "state", "val accuracy", "epochs", "seconds", *names]

    def value(r: dict) -> str:
        if r["value"] is not None:
            return f"{r['value']:.4f}"
        return f"({r['last_value']:.4f})" if r["last_value"] else "-"

    body = [
        [
            str(r["number"]),
            r["state"],
            value(r),
            str(r["epochs"]),
            f"{r['seconds']:.1f}" if r["seconds"] else "-",
            *[_fmt(r["params"].get(n, "-")) for n in names],
        ]
        for r in rows
    ]
    return header, body


def _png(plot, study) -> bytes | None:
    """One of Optuna's matplotlib plots as PNG bytes (None where it cannot be drawn yet)."""
    import matplotlib.pyplot as plt  # Optuna's plots are drawn with pyplot

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ax = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError):  # too few trials, or no spread in a parameter
            return None
    fig = ax.flat[0].figure if hasattr(ax, "flat") else ax.figure
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def ended(study) -> bool:
    """Whether the sweep is over: no trial running or queued, and as many finished as it asked for."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    held = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    busy = any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
    return not busy and held >= study.user_attrs.get("trials", 0)


def best_test_accuracy(study, data_dir: str | None = None, verify: bool | None = None) -> dict | None:
    """The test accuracy of the best trial once the sweep has ended: evaluated once (recorded in
    the study), for that trial alone; no other trial's test figure is ever computed. None while
    the sweep is still going (a then-best trial would get a test figure it may not keep)."""
    from fmnist.jobs.evaluate import evaluate_run

    recorded = study.user_attrs.get("test")
    if recorded:  # the one test figure this sweep gets, even if a later extension found a better trial
        return recorded
    if not ended(study):
        return None
    best = study.best_trial
    run = RunFolder(best.user_attrs.get("run_dir", ""))
    if not run.has_checkpoint():
        raise FmnistError(
            f"trial {best.number}'s run folder {run} is not on this machine: make the report where that trial ran"
        )
    metrics = evaluate_run(run, data_dir=data_dir, verify=verify)
    record = {
        "trial": best.number,
        "run_dir": str(run.path),
        "test_accuracy": metrics["test_accuracy"],
        "val_accuracy": best.value,
    }
    study.set_user_attr("test", record)
    return record


def write_report(study, folder: Path, data_dir: str | None = None, verify: bool | None = None) -> dict:
    """report.md and a self-contained report.html in the sweep's folder; returns the best trial's
    figures (its test accuracy None while the sweep is still going)."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise FmnistError(f"sweep {study.study_name!r} has no complete trial yet")
    best, test = study.best_trial, best_test_accuracy(study, data_dir, verify)
    header, body = status_table(study)
    summary = summary_rows(study, best, test, body)
    md = [f"# fmnist sweep {study.study_name}", "", f"{NOTE}, measured once on that trial alone.", ""]
    md += [md_table(["", ""], summary), ""]
    body_html = f"<p>{NOTE}.</p>" + html_table(["", ""], summary)
    for file, title, png in figures(study):
        if png is None:
            md += [f"## {title}", "", "(not enough complete trials to draw it yet)", ""]
            continue
        write_bytes(folder / file, png)
        md += [f"## {title}", "", f"![{title}]({file})", ""]
        data = base64.b64encode(png).decode()
        body_html += f"<h2>{html.escape(title)}</h2><img alt='{file}' src='data:image/png;base64,{data}'>"
    md += ["## Trials", "", md_table(header, body), ""]
    body_html += f"<h2>Trials</h2>{html_table(header, body)}"
    write_text(folder / "report.md", "\n".join(md))
    write_text(folder / "report.html", html_page(f"fmnist sweep {study.study_name}", body_html))
    tested = test["test_accuracy"] if test and test["trial"] == best.number else None
    return {"trial": best.number, "val_accuracy": best.value, "test_accuracy": tested, "test": test}


NOTE = "Every figure is validation accuracy, except the best trial's test accuracy"


def summary_rows(study, best, test: dict | None, body: list[list[str]]) -> list[list[str]]:
    """The report's summary table: the best trial, its figures, the trials' states, the settings."""
    counts = {s: sum(r[1] == s for r in body) for s in ORDER if any(r[1] == s for r in body)}
    attrs = study.user_attrs
    return [
        ["best trial", f"{best.number} ({best.user_attrs.get('run_dir')})"],
        ["its validation accuracy", f"{best.value:.4f}"],
        ["its test accuracy (evaluated once, on this trial alone)", _test_text(test, best.number)],
        ["its parameters", ", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items())],
        ["trials", ", ".join(f"{n} {s.lower()}" for s, n in counts.items())],
        ["sampler", str(attrs.get("sampler"))],
        ["pruner", str(attrs.get("pruner"))],
        ["Optuna / fmnist", f"{attrs.get('optuna')} / {attrs.get('fmnist')}"],
    ]


def figures(study) -> list[tuple[str, str, bytes | None]]:
    """Optuna's plots of the sweep: (file name, title, PNG bytes or None where not drawable yet)."""
    from optuna.visualization import matplotlib as plots

    return [
        ("history.png", "Optimisation history (validation accuracy)", _png(plots.plot_optimization_history, study)),
        ("importances.png", "Parameter importances", _png(plots.plot_param_importances, study)),
        ("slices.png", "Validation accuracy by parameter", _png(plots.plot_slice, study)),
    ]


def _test_text(test: dict | None, best: int) -> str:
    if test is None:
        return "not yet: taken once, when the sweep has ended"
    if test["trial"] != best:
        return (
            f"not taken: the sweep's one test figure went to trial {test['trial']} ({test['test_accuracy']:.4f}), "
            "the best when it ended first"
        )
    return f"{test['test_accuracy']:.4f}"
