"""The run folder's owner: every file a run holds, the checkpoint's format, how a run's data is
found, and when each file may change. Every command opens runs through `RunFolder`; no other
module spells a run's file names.

    config.json     the TrainConfig (written at the start; a lengthening resume replaces it only
                    together with a checkpoint trained under the new one)
    history.csv     one row per finished epoch
    last.pt         the newest checkpoint (after every epoch, and at the step a stop came)
    best.pt         the checkpoint of the best validation accuracy: the one that is tested
    metrics.json    the test figures of best.pt
    diverged.json, pruned.json, failed.json   how a run ended early, when it did
    curves.png, confusion.png, samples.png, misclassified.png, top_losses.png, reliability.png,
    report.html     the report
    model.onnx (+ model.onnx.json)            the default export

Each folder records the names it wrote (run/written.py): `--overwrite` removes those and nothing else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from fmnist.data import FashionMNIST, load_fashion_mnist, stratified_split
from fmnist.device import resolve_device
from fmnist.errors import FmnistError, UsageError
from fmnist.files import read_csv, read_json, write_csv
from fmnist.models import list_models
from fmnist.models.forward import prepare
from fmnist.models.network import create_network
from fmnist.run.checkpoint import load_checkpoint, save_checkpoint
from fmnist.run.written import Folder
from fmnist.training.config import HYPER, RECORD, TrainConfig, make_config

CONFIG, HISTORY, LAST, BEST, METRICS = "config.json", "history.csv", "last.pt", "best.pt", "metrics.json"
DIVERGED, PRUNED, FAILED = "diverged.json", "pruned.json", "failed.json"
REPORT = "report.html"
FIGURES = {
    "curves": "curves.png",
    "confusion": "confusion.png",
    "samples": "samples.png",
    "misclassified": "misclassified.png",
    "top_losses": "top_losses.png",
    "reliability": "reliability.png",
}
EXPORT = "model.onnx"
TRACKED = "tracking.json"  # where run/tracking.py logged the run
SUMMARY = "summary.json"  # a study's; its folder also holds these:
STUDY_FILES = (SUMMARY, "report.md", "report.html", "val_curves.png", "f1.png")


class RunFolder(Folder):
    """One run: its config, checkpoints, history, metrics, markers, figures and exports."""

    WRITES = frozenset(
        {
            CONFIG,
            HISTORY,
            LAST,
            BEST,
            METRICS,
            DIVERGED,
            PRUNED,
            FAILED,
            REPORT,
            EXPORT,
            EXPORT + ".json",
            TRACKED,
            *FIGURES.values(),
            *STUDY_FILES,
        }
    )

    def __init__(self, path: Path | str):
        super().__init__(path)
        self.pending: TrainConfig | None = None  # a lengthened config, recorded with its first checkpoint

    # --- what is there -------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.file(CONFIG).is_file()

    def require(self) -> RunFolder:
        if not self.path.is_dir():
            raise FmnistError(f"run folder {self.path} does not exist")
        if not self.exists():
            hint = " (a study's folder: name one of its runs)" if self.file(SUMMARY).is_file() else ""
            raise FmnistError(f"{self.path} is not a run folder: it has no {CONFIG}{hint}")
        return self

    def has_checkpoint(self, best: bool = True) -> bool:
        return self.file(BEST if best else LAST).is_file()

    def has_metrics(self) -> bool:
        return self.file(METRICS).is_file()

    def figure(self, name: str) -> Path:
        return self.record(FIGURES[name])

    def figures(self) -> dict[str, Path]:
        return {name: self.file(file) for name, file in FIGURES.items()}

    def export_path(self) -> Path:
        return self.file(EXPORT)

    def is_own_file(self, path: Path) -> bool:
        """Whether `path` is one of this run's files other than its export (never to be written over)."""
        names = self.written_names() - {EXPORT, EXPORT + ".json"}
        return path.resolve().parent == self.path.resolve() and path.name in names

    # --- config --------------------------------------------------------------------------------
    def read_config(self) -> TrainConfig:
        return make_config(read_json(self.require().file(CONFIG)))

    def start(self, cfg: TrainConfig, overwrite: bool) -> None:
        """A new run: the folder prepared (see Folder.prepare) and its config.json written."""
        self.prepare(overwrite)
        self.write_json(CONFIG, dataclasses.asdict(cfg))

    def lengthen(self, cfg: TrainConfig) -> None:
        """A resume's config that differs from config.json: it becomes the run's config with the
        first checkpoint trained under it, so a stop before then leaves the run as it was."""
        self.pending = cfg

    def resumable_config(self) -> tuple[TrainConfig, dict[str, Any]]:
        """The run's config and its last.pt, checked to belong together. A last.pt trained under a
        lengthening of config.json is the run's (saved by a lengthening resume that stopped before
        it recorded config.json): its config becomes the run's config.json here."""
        saved = self.read_config()
        state = load_checkpoint(self.file(LAST))
        try:
            trained = make_config(state.get("config", {}))
        except UsageError as e:
            raise FmnistError(f"{self.file(LAST)} holds a config this fmnist cannot read ({e})") from None
        if lengthens(saved, trained):
            self.write_json(CONFIG, dataclasses.asdict(trained))
            return trained, state
        differ = [k for k in TrainConfig.fields_of(HYPER, RECORD) if getattr(trained, k) != getattr(saved, k)]
        if differ:
            k = differ[0]
            raise FmnistError(
                f"{self.file(LAST)} was trained with {k}={getattr(trained, k)!r} but the run's "
                f"{CONFIG} says {getattr(saved, k)!r}: it is not this run's checkpoint"
            )
        return saved, state

    # --- checkpoints and history ---------------------------------------------------------------
    def save(self, state: dict[str, Any], history: list[dict] | None, improved: bool = False) -> None:
        """After an epoch (`history` given): best.pt when it improved, last.pt and history.csv;
        mid-epoch (`history` None): last.pt only. Then a pending lengthened config.json. Each file is
        renamed into place, so a stop here leaves whole files."""
        if improved:
            save_checkpoint(self.record(BEST), state)
        save_checkpoint(self.record(LAST), state)
        if history is not None:
            write_csv(self.record(HISTORY), history)
        if self.pending is not None:
            self.write_json(CONFIG, dataclasses.asdict(self.pending))
            self.pending = None

    def save_made(self, state: dict[str, Any], history: list[dict]) -> None:
        """A run made rather than trained (an ensemble): its best.pt and history, no last.pt, so
        there is nothing to resume."""
        save_checkpoint(self.record(BEST), state)
        write_csv(self.record(HISTORY), history)

    def checkpoint(self, best: bool = True) -> dict[str, Any]:
        return load_checkpoint(self.file(BEST if best else LAST))

    def history(self) -> list[dict]:
        return read_csv(self.file(HISTORY))

    def load_model(self, device: str = "cpu") -> tuple[nn.Module, TrainConfig, dict[str, Any]]:
        """The run's model with the weights of best.pt (eval mode), its config and the checkpoint."""
        cfg = self.read_config()
        if not cfg.network and cfg.model not in list_models():
            raise FmnistError(
                f"{self.path}: its model {cfg.model!r} is not one of fmnist's ({', '.join(list_models())})"
            )
        state = load_checkpoint(self.file(BEST))
        if state.get("config", {}).get("model") != cfg.model:
            raise FmnistError(
                f"{self.file(BEST)} holds a {state.get('config', {}).get('model')!r} "
                f"model, but the run is for {cfg.model!r}"
            )
        try:
            model = create_network(cfg)
        except UsageError as e:  # code not trusted, or a record this fmnist cannot build
            raise type(e)(f"{self.path}: {e}") from None
        try:
            model.load_state_dict(state["model"])
        except (RuntimeError, KeyError, TypeError) as e:
            raise FmnistError(f"{self.file(BEST)} does not fit model {cfg.model!r}: {str(e).splitlines()[0]}") from None
        return prepare(model, resolve_device(device)).eval(), cfg, state

    # --- metrics and markers -------------------------------------------------------------------
    def metrics(self) -> dict[str, Any] | None:
        return read_json(self.file(METRICS)) if self.has_metrics() else None

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        self.write_json(METRICS, metrics)

    def mark(self, marker: str, info: dict[str, Any]) -> None:
        """Record how the run ended early: 'diverged', 'pruned' or 'failed'."""
        self.write_json(_MARKERS[marker], info)

    def clear_mark(self, marker: str) -> None:
        self.file(_MARKERS[marker]).unlink(missing_ok=True)

    def status(self) -> str:
        """How the run stands: pruned, diverged or failed (its marker; retried: a sweep's trial
        stopped and queued again), finished (tested), trained (every epoch, not tested: a sweep's
        trial), stopped (a last.pt to resume from) or started (nothing trained yet)."""
        for marker in ("pruned", "diverged", "failed"):
            if self.file(_MARKERS[marker]).is_file():
                return "retried" if marker == "failed" and (self.marked(marker) or {}).get("retried") else marker
        if self.has_metrics():
            return "finished"
        if not self.has_checkpoint(best=False):
            return "started"
        return "trained" if self.trained_through() else "stopped"

    def trained_through(self) -> bool:
        """Whether training ended by itself: every epoch done, or the target accuracy reached."""
        cfg, history = self.read_config(), self.history_so_far()
        if len(history) >= cfg.epochs:
            return True
        return bool(cfg.target_accuracy) and any(h["val_accuracy"] >= cfg.target_accuracy for h in history)

    def history_so_far(self) -> list[dict]:
        """The finished epochs' rows, or none where no epoch finished."""
        return self.history() if self.file(HISTORY).is_file() else []

    def marked(self, marker: str) -> dict[str, Any] | None:
        path = self.file(_MARKERS[marker])
        return read_json(path) if path.is_file() else None

    # --- data ----------------------------------------------------------------------------------
    def data(self, cfg: TrainConfig, data_dir: str | None = None, verify: bool | None = None) -> FashionMNIST:
        """The run's data: where its config says, unless `data_dir`/`verify` are given (a run
        trained on another machine is evaluated on this one's copy, checked by SHA-256)."""
        return load_data(cfg, data_dir, verify)


_MARKERS = {"diverged": DIVERGED, "pruned": PRUNED, "failed": FAILED}


def lengthens(saved: TrainConfig, trained: TrainConfig) -> bool:
    """Whether `trained` is `saved` made longer by a resume (more epochs, a new schedule cycle)."""
    if trained.epochs <= saved.epochs:
        return False
    same = dataclasses.replace(trained, epochs=saved.epochs, schedule_restarts=saved.schedule_restarts)
    return (
        all(getattr(same, k) == getattr(saved, k) for k in TrainConfig.fields_of(HYPER, RECORD))
        and trained.schedule_restarts[: len(saved.schedule_restarts)] == saved.schedule_restarts
    )


def load_data(cfg: TrainConfig, data_dir: str | None = None, verify: bool | None = None) -> FashionMNIST:
    """The data a config names, with `data_dir` and `verify` overriding it where given."""
    return load_fashion_mnist(
        (data_dir if data_dir is not None else cfg.data_dir) or None,
        verify=cfg.verify if verify is None else verify,
        progress=not cfg.quiet,
    )


def split_of(labels: Tensor, cfg: TrainConfig, exclude: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """The (train, validation) indices a run is trained and validated on: its fraction, its split
    seed and its excluded images (`exclude` in their place where given)."""
    return stratified_split(labels, cfg.val_split, cfg.validation_seed(), cfg.exclude if exclude is None else exclude)
