"""A sweep's trials at a glance (`fmnist sweep status`) and its report (`fmnist sweep report`):
Optuna's own plots, the trials, and the best trial's test accuracy, evaluated once, on it alone."""

from __future__ import annotations

import base64
import html
import io
import warnings
from pathlib import Path

from ..errors import FmnistError
from ..files import write_bytes, write_text
from ..report import html_page, html_table, md_table

ORDER = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "WAITING": 3, "FAIL": 4}


def trial_rows(study) -> list[dict]:
    """Every trial, best first: finished ones by validation accuracy (pruned by their last epoch's),
    then those running or waiting, then failures."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
        rows.append({"number": t.number, "state": t.state.name, "value": t.value, "last_value": last,
                     "epochs": t.user_attrs.get("epochs", len(t.intermediate_values)),
                     "seconds": t.user_attrs.get("seconds"), "params": dict(t.params),
                     "run_dir": t.user_attrs.get("run_dir"), "note": t.user_attrs.get("failed", "")})
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

    body = [[str(r["number"]), r["state"], value(r),
             str(r["epochs"]), f"{r['seconds']:.1f}" if r["seconds"] else "-",
             *[_fmt(r["params"].get(n, "-")) for n in names]] for r in rows]
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


def best_test_accuracy(study) -> dict:
    """The best trial's test accuracy, from its run folder: evaluated once (recorded in the study),
    and only for that trial; no other trial's test figure is ever computed."""
    from ..workflow import evaluate_run
    best = study.best_trial
    recorded = study.user_attrs.get("test")
    if recorded and recorded.get("trial") == best.number:
        return recorded
    run_dir = Path(best.user_attrs.get("run_dir", ""))
    if not (run_dir / "best.pt").is_file():
        raise FmnistError(f"trial {best.number}'s run folder {run_dir} is not on this machine: "
                          "make the report where that trial ran")
    metrics = evaluate_run(run_dir)
    record = {"trial": best.number, "run_dir": str(run_dir), "test_accuracy": metrics["test_accuracy"],
              "val_accuracy": best.value}
    study.set_user_attr("test", record)
    return record


def write_report(study, folder: Path) -> dict:
    """report.md and a self-contained report.html in the sweep's folder."""
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as plots
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise FmnistError(f"sweep {study.study_name!r} has no complete trial yet")
    test = best_test_accuracy(study)
    header, body = status_table(study)
    counts = {s: sum(r[1] == s for r in body) for s in ORDER if any(r[1] == s for r in body)}
    attrs = study.user_attrs
    summary = [["best trial", f"{test['trial']} ({test['run_dir']})"],
               ["its validation accuracy", f"{test['val_accuracy']:.4f}"],
               ["its test accuracy (evaluated once, on this trial alone)", f"{test['test_accuracy']:.4f}"],
               ["its parameters", ", ".join(f"{k}={_fmt(v)}" for k, v in study.best_trial.params.items())],
               ["trials", ", ".join(f"{n} {s.lower()}" for s, n in counts.items())],
               ["sampler", str(attrs.get("sampler"))], ["pruner", str(attrs.get("pruner"))],
               ["Optuna / fmnist", f"{attrs.get('optuna')} / {attrs.get('fmnist')}"]]
    figures = [("history.png", "Optimisation history (validation accuracy)", plots.plot_optimization_history),
               ("importances.png", "Parameter importances", plots.plot_param_importances),
               ("slices.png", "Validation accuracy by parameter", plots.plot_slice)]
    md = [f"# fmnist sweep {study.study_name}", "", "Every figure is validation accuracy, except the best trial's "
          "test accuracy, measured once on that trial alone.", "", md_table(["", ""], summary), ""]
    body_html = ("<p>Every figure is validation accuracy, except the best trial's test accuracy.</p>"
                 + html_table(["", ""], summary))
    for file, title, plot in figures:
        png = _png(plot, study)
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
    return test
