"""Handles on the folders fmnist writes, for Python and notebooks: a `Run`, a `Study`, an `Audit`,
a `Sweep`. Each reads its folder's plain files through the same classes the commands use, and
shows itself in a notebook (`_repr_html_`, with `text/plain` from `__repr__`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fmnist.api import display
from fmnist.errors import UsageError
from fmnist.run.audit import AuditFolder
from fmnist.run.folder import RunFolder
from fmnist.run.study import StudyFolder, study_rows
from fmnist.training.config import TrainConfig


class Run:
    """A run folder: its config, metrics, history, and the commands that use a run."""

    def __init__(self, path: Path | str):
        self.folder = RunFolder(path).require()
        self.path = self.folder.path

    def __repr__(self) -> str:
        m = self.metrics or {}
        figure = f", test accuracy {m['test_accuracy']:.4f}" if "test_accuracy" in m else ""
        return f"Run({str(self.path)!r}: {self.config.model}, {self.folder.status()}{figure})"

    @property
    def config(self) -> TrainConfig:
        return self.folder.read_config()

    @property
    def metrics(self) -> dict[str, Any] | None:
        """metrics.json: the test figures, taken once, after training (None before)."""
        return self.folder.metrics()

    @property
    def history(self):
        """history.csv as a pandas DataFrame, one row per epoch."""
        import pandas as pd

        return pd.DataFrame(self.folder.history_so_far())

    def predict(self, images: Any, top_k: int = 3, backend: str | None = None):
        """The `top_k` classes of each image (file paths, or a tensor [N, 1, 28, 28] / [N, 28, 28] in
        [0, 1]) as a DataFrame: calibrated probabilities, with the run's test-time views, as
        `fmnist predict` gives them."""
        import pandas as pd
        import torch

        from fmnist.inference.predictor import load_predictor
        from fmnist.jobs.predict import predict_files, top_classes

        if isinstance(images, (str, Path)) or (
            isinstance(images, list) and images and isinstance(images[0], (str, Path))
        ):
            paths = [Path(p) for p in ([images] if isinstance(images, (str, Path)) else images)]
            results = predict_files(self.path, paths, top_k, backend)
            rows = [
                {"image": r["file"], "rank": k + 1, **p}
                for r in results
                for k, p in enumerate(r.get("predictions", []))
            ]
            rows += [{"image": r["file"], "error": r["error"]} for r in results if "error" in r]
            return pd.DataFrame(rows)
        batch = torch.as_tensor(images, dtype=torch.float32)
        batch = batch.unsqueeze(1) if batch.dim() == 3 else batch
        if batch.dim() != 4 or tuple(batch.shape[1:]) != (1, 28, 28):
            raise UsageError(f"images must be [N, 1, 28, 28] or [N, 28, 28], got {list(batch.shape)}")
        if not 1 <= top_k <= 10:
            raise UsageError(f"top_k must be 1-10 (there are 10 classes), got {top_k}")
        probs = load_predictor(self.path, backend).probabilities(batch)
        rows = [
            {"image": i, "rank": k + 1, **p}
            for i, top in enumerate(top_classes(probs, top_k))
            for k, p in enumerate(top)
        ]
        return pd.DataFrame(rows)

    def evaluate(self, data_dir: str | None = None, verify: bool | None = None) -> dict[str, Any]:
        """Test again from best.pt (metrics.json, the figures and report.html rewritten)."""
        from fmnist.jobs.evaluate import evaluate_run

        return evaluate_run(self.folder, data_dir=data_dir, verify=verify)

    def export(self, path: Path | str | None = None, int8: bool = False) -> Path:
        """The tested model as ONNX (default RUN/model.onnx), checked against PyTorch; with `int8`,
        statically quantised (default RUN/model.int8.onnx), as `fmnist export --int8`."""
        from fmnist.jobs.export import export_int8, export_run

        default = self.folder.export_path()
        if int8:
            out = Path(path) if path is not None else default.with_suffix(".int8.onnx")
            export_int8(self.path, out)
        else:
            out = Path(path) if path is not None else default
            export_run(self.path, out)
        return out

    def explain(
        self,
        images: list[Path | str],
        out: Path | str,
        method: str | None = None,
        test: int = 0,
        overwrite: bool = True,
    ):
        """Saliency maps of image files (and the first `test` test images, of the run's own data) into
        the folder `out`, as `fmnist explain` writes them; a DataFrame of what each image got."""
        import pandas as pd

        from fmnist.explain.methods import DEFAULT_METHOD
        from fmnist.jobs.explain import explain_images

        out, cfg = Path(out), self.config
        results = explain_images(
            self.path,
            [Path(p) for p in images],
            test,
            method or DEFAULT_METHOD,
            out,
            cfg.data_dir or None,
            cfg.verify,
            overwrite,
        )
        return pd.DataFrame([{**r, "overlay": str(out / r["overlay"])} for r in results])

    def summary_rows(self) -> list[tuple[str, Any]]:
        cfg, m = self.config, self.metrics or {}
        history = self.folder.history_so_far()
        rows: list[tuple[str, Any]] = [("model", cfg.model), ("status", self.folder.status())]
        rows += [("epochs", f"{len(history)} of {cfg.epochs}")]
        if history:
            rows.append(("best validation accuracy", max(h["val_accuracy"] for h in history)))
        for key in ("test_accuracy", "test_loss", "best_epoch", "train_seconds"):
            if key in m:
                rows.append((key.replace("_", " "), m[key]))
        return rows

    def _repr_html_(self) -> str:
        return display.run_html(f"run {self.path}", self.summary_rows(), self.folder.figures())


class Study:
    """A study folder: its runs side by side."""

    def __init__(self, path: Path | str):
        self.folder = StudyFolder(path)
        if not self.folder.exists():
            raise UsageError(f"{path}: not a study folder (no {StudyFolder.SUMMARY})")
        self.path = self.folder.path

    def __repr__(self) -> str:
        return f"Study({str(self.path)!r}: {', '.join(r.config.model for r in self.runs)})"

    @property
    def summary(self) -> dict[str, Any]:
        return self.folder.summary()

    @property
    def runs(self) -> list[Run]:
        return [Run(r.path) for r in self.folder.runs()]

    @property
    def combined(self) -> Run | None:
        """The ensemble of the study's models (its report's last row), where it made one."""
        run = self.folder.combined()
        return Run(run.path) if run is not None else None

    def rows(self) -> list[dict[str, Any]]:
        """summary.json's rows: each model's, then the models combined."""
        return study_rows(self.summary)

    def table(self):
        """The comparison as a DataFrame, one row per model and one for the models combined."""
        import pandas as pd

        return pd.DataFrame([{k: v for k, v in m.items() if k != "network"} for m in self.rows()])

    def _repr_html_(self) -> str:
        header = ["model", "params", "val accuracy", "test accuracy", "test loss", "best epoch", "train s"]
        keys = ["name", "params", "val_accuracy", "test_accuracy", "test_loss", "best_epoch", "train_seconds"]
        rows = [[m[k] for k in keys] for m in self.rows()]
        return display.study_html(f"study {self.path}", header, rows, self.folder.file("val_curves.png"))


class Audit:
    """An audit folder: its likely label errors and duplicates."""

    def __init__(self, path: Path | str):
        self.folder = AuditFolder(path)
        if not self.folder.exists():
            raise UsageError(f"{path}: not an audit folder (no audit.json)")
        self.path = self.folder.path

    def __repr__(self) -> str:
        issues = self.summary["label_issues"]
        return f"Audit({str(self.path)!r}: {issues['train']} training and {issues['test']} test label issues)"

    @property
    def summary(self) -> dict[str, Any]:
        return self.folder.summary()

    @property
    def label_issues(self):
        """label_issues.csv as a DataFrame, the most likely wrong first."""
        import pandas as pd

        from fmnist.run.audit import LABEL_ISSUES

        return pd.read_csv(self.folder.file(LABEL_ISSUES))

    def _repr_html_(self) -> str:
        s = self.summary
        dup = s["duplicates"]
        rows = [
            ("likely label errors, training", s["label_issues"]["train"]),
            ("likely label errors, test", s["label_issues"]["test"]),
            ("exact duplicate pairs", sum(dup["exact"].values())),
            ("near duplicate pairs", sum(dup["near"].values())),
            ("cross-validations", s["settings"]["repeats"]),
        ]
        return display.audit_html(f"audit {self.path}", rows, self.folder.figure("label_issues"))


class Sweep:
    """A sweep's folder (the journal of its Optuna study, one run folder per trial)."""

    def __init__(self, path: Path | str, storage: str | None = None):
        from fmnist.sweep.study import open_sweep

        self.path = Path(path)
        self.study = open_sweep(self.path.name, self.path, storage)

    def __repr__(self) -> str:
        return f"Sweep({str(self.path)!r}: {len(self.study.trials)} trials)"

    def table(self):
        """Every trial, best first, as a DataFrame."""
        import pandas as pd

        from fmnist.sweep.report import trial_rows

        return pd.DataFrame(
            [{**{k: v for k, v in r.items() if k != "params"}, **r["params"]} for r in trial_rows(self.study)]
        )

    @property
    def best(self) -> Run | None:
        """The best finished trial's run (chosen on validation accuracy)."""
        from fmnist.sweep.report import trial_rows

        done = [r for r in trial_rows(self.study) if r["state"] == "COMPLETE" and r["run_dir"]]
        return Run(done[0]["run_dir"]) if done else None

    def _repr_html_(self) -> str:
        from fmnist.sweep.report import status_table

        header, rows = status_table(self.study)
        return display.sweep_html(f"sweep {self.path}", header, rows)
