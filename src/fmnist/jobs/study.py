"""The study: several models trained and tested under identical settings, compared in one report.

run_study(["shallow", "simple_cnn", "deep_cnn", "deeper_cnn"], make_config(), Path("runs/study"))
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fmnist.data import CLASSES, FashionMNIST, fingerprint
from fmnist.device import resolve_device
from fmnist.errors import UsageError
from fmnist.jobs.ensemble import ensemble_run
from fmnist.jobs.train import train_run
from fmnist.models.ensemble import is_ensemble
from fmnist.models.network import create_network, is_spec, layer_table, origin, parameters_of, resolve_network
from fmnist.models.registry import describe as describe_model
from fmnist.reports import plots
from fmnist.reports.diagnostics import check_identical
from fmnist.reports.html import write_study_report
from fmnist.run.audit import AuditFolder, audit_for
from fmnist.run.folder import RunFolder, load_data, split_of
from fmnist.run.study import StudyFolder
from fmnist.run.tracking import check_tracking
from fmnist.stops import Diverged
from fmnist.training.config import TrainConfig, make_config
from fmnist.training.setup import trainable_problems

PER_MODEL = ("model", "net_args", "network")  # a study's settings are those its models share


COMBINED = "combined"  # the folder, inside the study's, of its models' ensemble
NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}


def combined_name(n: int) -> str:
    return f"the {NUMBERS.get(n, n)} combined"


def summarize(run: RunFolder) -> dict:
    """One model's row of summary.json, read from its run folder; an ensemble's (the study's models
    combined) counts its members' epochs and parameters."""
    cfg, metrics, history = run.read_config(), run.metrics(), run.history()
    best = next(h for h in history if h["epoch"] == metrics["best_epoch"])
    members = [make_config(m["config"]) for m in cfg.network["members"]] if is_ensemble(cfg.network) else []
    return {
        "name": combined_name(len(members)) if members else cfg.model,
        "params": parameters_of(cfg),
        "epochs": sum(m["epochs"] for m in cfg.network["members"]) if members else len(history),
        "batch_size": members[0].batch_size if members else cfg.batch_size,
        "train_accuracy": best["train_accuracy"],
        "val_accuracy": best["val_accuracy"],
        "test_accuracy": metrics["test_accuracy"],
        "test_loss": metrics["test_loss"],
        "train_seconds": metrics["train_seconds"],  # timing()'s, validation included
        "best_epoch": metrics["best_epoch"],
        "run_dir": str(run.path),
        "network": {
            "origin": origin(cfg),
            "description": (cfg.network or {}).get("description", "") or describe_model(cfg.model),
            "net_args": cfg.net_args,
            "layers": layer_table(cfg),
        },
        **({"members": [c.model for c in members]} if members else {}),
    }


def check_study(configs: list[TrainConfig], n_train: int) -> None:
    """Refuse, in one line and before any training, settings that do not apply to every model."""
    problems = [p for cfg in configs for p in trainable_problems(create_network(cfg), cfg, n_train)]
    if problems:  # each once: a batch size too large for the data is the same for every model
        raise UsageError("; ".join(dict.fromkeys(problems)) + " (choose other --models or settings)")


def study_configs(models: list[str | dict], base: TrainConfig, net_args: dict | None = None) -> list[TrainConfig]:
    """Each model's config: `base` with the model, its network file or class read (each checked,
    so a mistake in the last fails before hours of training on the first), each name once.
    `net_args` go to every network file and class among the models."""

    def config(model: str | dict) -> TrainConfig:
        if isinstance(model, dict):  # a class given in Python, recorded (fmnist.study([MyNet]))
            return dataclasses.replace(base, model=model["name"], network=model, net_args=net_args or {})
        args = (net_args or {}) if is_spec(model) else {}
        return resolve_network(dataclasses.replace(base, model=model, network={}, net_args=args))

    configs = [config(m) for m in models]
    for cfg in configs:
        create_network(cfg)  # an unknown name, a bad file or class
    names = [cfg.model for cfg in configs]
    if base.members > 1:
        raise UsageError("--members: a study's models are one network each (the study combines them itself)")
    if COMBINED in names:
        raise UsageError(f"a study's models cannot be named {COMBINED!r}: its folder holds the models combined")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"two of the models are named {twice[0]!r}; a study's runs are named by their models")
    return configs


def run_study(
    models: list[str | dict], base: TrainConfig, out: Path, overwrite: bool = False, net_args: dict | None = None
) -> dict:
    """Train and evaluate each model under the same settings, then compare them in a report."""
    configs = study_configs(models, base, net_args)
    resolve_device(base.device)
    check_tracking(base.track)
    study = StudyFolder(out)
    study.check_new(overwrite)
    data = load_data(base)
    n_train = len(split_of(data.train_labels, base)[0])
    check_study(configs, n_train)
    study.prepare(overwrite)
    runs, failures = [], []
    for cfg in configs:
        run = study.run(cfg.model)
        try:
            train_run(cfg, run.path, overwrite=True, data=data)
        except Diverged as e:
            failures.append(f"{cfg.model}: {e}")
            if not run.has_metrics():
                continue
        runs.append(run)
    combined = combine(study, runs, data, base.quiet)
    return write_study(study, runs, base, failures, audit_for(fingerprint(data)), combined)


def combine(study: StudyFolder, runs: list[RunFolder], data: FashionMNIST, quiet: bool) -> RunFolder | None:
    """The study's tested models as one ensemble run (weights chosen on their shared validation
    split), beside them in the study's folder; none with fewer than two."""
    if len(runs) < 2:
        return None
    folder = study.run(COMBINED)
    ensemble_run([run.path for run in runs], folder.path, overwrite=True, data=data, quiet=quiet)
    return folder


def write_study(
    study: StudyFolder,
    runs: list[RunFolder],
    base: TrainConfig,
    failures: list[str],
    audit: AuditFolder | None = None,
    combined: RunFolder | None = None,
) -> dict:
    """summary.json, the comparison figures and the reports of a study's tested runs and of their
    ensemble (`combined`: a row beside theirs), linking the audit of the same data when there is one."""
    rows = [summarize(run) for run in runs]
    together = rows + ([summarize(combined)] if combined is not None else [])
    metrics = {row["name"]: run.metrics() for row, run in zip(together, [*runs, combined])}
    flags = failures + [f for m in metrics.values() for f in m["diagnostics"]] + check_identical(metrics)
    summary = {
        "models": rows,
        "diagnostics": flags,
        "settings": {k: v for k, v in dataclasses.asdict(base).items() if k not in PER_MODEL},
    }
    if combined is not None:
        summary["combined"] = together[-1]
    if audit is not None:
        summary["audit"] = {
            "folder": str(audit.path),
            **{k: audit.summary()[k] for k in ("label_issues", "duplicates")},
        }
    study.write_json(StudyFolder.SUMMARY, summary)
    figures = {"val_curves": study.record("val_curves.png"), "f1": study.record("f1.png")}
    if rows:
        plots.compare_curves({row["name"]: run.history() for row, run in zip(rows, runs)}, figures["val_curves"])
        plots.compare_f1(
            {n: [m["classification_report"][c]["f1-score"] for c in CLASSES] for n, m in metrics.items()}, figures["f1"]
        )
    figures.update({row["name"]: run.figures()["confusion"] for row, run in zip(together, [*runs, combined])})
    write_study_report(
        study.record("report.md"), study.record("report.html"), figures, together, metrics, flags, audit_link(audit)
    )
    return summary


def audit_link(audit: AuditFolder | None) -> dict | None:
    """What the study's report says of the data's audit: where its report is, and its counts."""
    if audit is None:
        return None
    found = audit.summary()
    return {
        "report": audit.file("report.html"),
        "train": found["label_issues"]["train"],
        "test": found["label_issues"]["test"],
        "duplicates": sum(sum(v.values()) for v in found["duplicates"].values()),
    }


def reevaluate_study(study: StudyFolder, data_dir: str | None = None, verify: bool | None = None) -> dict:
    """Evaluate each of a study's runs again (with what this fmnist measures), then rewrite the
    study's summary and reports from them."""
    from fmnist.jobs.evaluate import evaluate_run

    runs = study.runs()
    base = runs[0].read_config() if runs else make_config(study.summary().get("settings", {}))
    data = runs[0].data(base, data_dir, verify) if runs else None
    combined = study.combined()
    for run in [*runs, *([combined] if combined else [])]:
        evaluate_run(run, data)
    audit = audit_for(fingerprint(data)) if data is not None else None
    return write_study(study, runs, base, [], audit, combined)
