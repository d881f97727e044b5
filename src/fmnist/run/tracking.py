"""A finished run folder mirrored into MLflow: its parameters, one value per epoch of each curve
(history.csv), the test figures (metrics.json), its figures, report and files as artefacts, and
later its ONNX export; or into TensorBoard event files (each curve per epoch, the test figures, the
figures as images). The run folder stays the record; the store is a view of many runs at once.
Whether the backend can be used at all (installed, its folder writable) is checked before any
training (check_tracking); anything that fails after training costs one warning line, never the run.

`tracking.json` in the run folder says where an MLflow run went, so a later export joins it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import logging
import os
import sys
import time
from pathlib import Path

from fmnist.errors import UsageError
from fmnist.run.folder import CONFIG, FIGURES, HISTORY, METRICS, REPORT, TRACKED, RunFolder
from fmnist.training.config import TrainConfig, shown_value

DEFAULT_URI = "sqlite:///mlflow.db"
DEFAULT_EVENTS = "tensorboard"  # `tensorboard --logdir tensorboard`: one subfolder per run
EXPERIMENT = "fmnist"


def _client(uri: str):
    # One try, a few seconds: an unreachable server must not hold the run up for MLflow's retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its table-creation notices (set on import)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return MlflowClient(uri)


def _warn(where: str, e: Exception) -> None:
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    print(f"warning: could not log to {where} (the run itself is complete): {reason[:200]}", file=sys.stderr)


def check_tracking(track: str) -> None:
    """Refuse, before any training, a --track whose backend is not installed or whose folder
    cannot be written; a store that cannot be reached is found out (and warned of) only later."""
    kind, _, where = track.partition(":")
    if kind not in ("mlflow", "tensorboard"):
        return
    if importlib.util.find_spec(kind) is None:  # each backend's package is named as the backend
        raise UsageError(f"--track {kind} needs the {kind} package: pip install 'fmnist[track]'")
    folder = Path(where or DEFAULT_EVENTS) if kind == "tensorboard" else sqlite_folder(where or DEFAULT_URI)
    if folder is None:
        return
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--track {track}: cannot write in {existing}")


def sqlite_folder(uri: str) -> Path | None:
    """The folder of an MLflow sqlite store (None for a server or another store)."""
    return Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///") else None


def absolute_uri(uri: str) -> str:
    """An MLflow store URI that means the same from any working folder (sqlite:///mlflow.db is
    relative to the folder the run was trained in; an export elsewhere must find the same store)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    if "://" not in uri and ":" not in uri[1:2]:  # a plain folder: MLflow's file store
        return str(Path(uri).resolve())
    return uri


def track_run(folder: RunFolder, cfg: TrainConfig, diverged: bool = False) -> None:
    """Log the run in `folder` to where `cfg.track` says, if anywhere."""
    _track(folder, cfg, diverged)


def track_trial(folder: RunFolder, cfg: TrainConfig, sweep: str, sweep_dir: Path) -> None:
    """Log a sweep's finished or pruned trial: in MLflow as a nested run of the sweep's own run
    (found by its folder, made by the first trial to need it), or as TensorBoard event files."""
    _track(folder, cfg, False, (sweep, sweep_dir))


def _track(folder: RunFolder, cfg: TrainConfig, diverged: bool, sweep: tuple[str, Path] | None = None) -> None:
    kind, _, where = cfg.track.partition(":")
    if kind == "tensorboard":
        try:
            write_events(folder, Path(where or DEFAULT_EVENTS))
        except Exception as e:  # a full disk, a folder made unwritable meanwhile: not the run's failure
            _warn(f"TensorBoard in {where or DEFAULT_EVENTS}", e)
        return
    if kind != "mlflow":
        return
    uri = absolute_uri(where or DEFAULT_URI)
    try:
        client = _client(uri)
        tags = {"mlflow.parentRunId": _sweep_run(client, *sweep), "fmnist.sweep": str(sweep[1])} if sweep else {}
        run_id = _log_run(client, folder, cfg, diverged, tags)
    except Exception as e:  # any failure of the store: a warning, not the run's failure
        _warn(f"MLflow at {uri}", e)
        return
    folder.write_json(
        TRACKED, {"mlflow": {"uri": uri, "run_id": run_id, "parent_run_id": tags.get("mlflow.parentRunId")}}
    )


def _experiment(client) -> str:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)


def _log_run(client, folder: RunFolder, cfg: TrainConfig, diverged: bool, tags: dict | None = None) -> str:
    from mlflow.entities import Metric, Param, RunStatus

    tags = {"fmnist.run_dir": str(folder.path), "fmnist.status": folder.status(), **(tags or {})}
    run = client.create_run(_experiment(client), run_name=folder.path.name, tags=tags)
    run_id, now = run.info.run_id, int(time.time() * 1000)
    params = [Param(k, str(shown_value(v))[:500]) for k, v in dataclasses.asdict(cfg).items()]
    metrics = [
        Metric(key, float(value), now, int(row["epoch"]))
        for row in folder.history_so_far()
        for key, value in row.items()
        if key != "epoch"
    ]
    tested = folder.metrics() or {}
    figures = {k: tested.get(k) for k in ("test_accuracy", "test_loss", "top2_accuracy", "best_epoch", "train_seconds")}
    figures |= {f"calibration_{k}": v for k, v in (tested.get("calibration") or {}).items() if isinstance(v, float)}
    metrics += [Metric(k, float(v), now, 0) for k, v in figures.items() if isinstance(v, (int, float))]
    for start in range(0, max(len(metrics), len(params)), 900):  # MLflow takes at most 1000 a batch
        client.log_batch(run_id, metrics=metrics[start : start + 900], params=params[start : start + 900])
    for name in (CONFIG, HISTORY, METRICS, REPORT, *FIGURES.values()):
        if folder.file(name).is_file():
            client.log_artifact(run_id, str(folder.file(name)))
    ended = {
        "pruned": RunStatus.KILLED,
        "retried": RunStatus.KILLED,
        "failed": RunStatus.FAILED,
        "diverged": RunStatus.FAILED,
    }
    status = RunStatus.FAILED if diverged else ended.get(folder.status(), RunStatus.FINISHED)
    client.set_terminated(run_id, RunStatus.to_string(status))
    return run_id


def track_export(folder: RunFolder, exported: Path) -> None:
    """Add an export (and its description) to the run's MLflow run, where the run was tracked."""
    where = folder.file(TRACKED)
    if not where.is_file():
        return
    from fmnist.files import read_json

    mlflow_run = read_json(where)["mlflow"]
    try:
        client = _client(mlflow_run["uri"])
        for path in (exported, exported.with_name(exported.name + ".json")):
            client.log_artifact(mlflow_run["run_id"], str(path))
    except Exception as e:
        _warn(f"MLflow at {mlflow_run['uri']}", e)


def write_events(folder: RunFolder, root: Path) -> Path:
    """TensorBoard event files of the run: each history column per epoch, the test figures, and
    the curves, confusion matrix and reliability diagram as images; in ROOT/<the run's path>."""
    import numpy as np
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    where = root / events_name(folder.path)
    writer = SummaryWriter(log_dir=str(where))
    try:
        for row in folder.history_so_far():
            for key, value in row.items():
                if key != "epoch":
                    writer.add_scalar(key, value, int(row["epoch"]))
        tested = folder.metrics() or {}
        for key in ("test_accuracy", "test_loss", "top2_accuracy"):
            if key in tested:
                writer.add_scalar(f"test/{key}", tested[key], int(tested.get("best_epoch", 0)))
        for name in ("curves", "confusion", "reliability"):
            path = folder.file(FIGURES[name])
            if path.is_file():
                writer.add_image(name, np.asarray(Image.open(path).convert("RGB")), dataformats="HWC")
    finally:
        writer.close()
    return where


def events_name(path: Path) -> Path:
    """The run's event subfolder: its path (below the working folder where it lies there), folder
    by folder, so runs/a-b and runs/a/b stay apart."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve())
    except ValueError:
        return Path(*resolved.parts[1:])


def _sweep_run(client, sweep: str, sweep_dir: Path) -> str:
    """The MLflow run standing for the whole sweep (its trials are nested under it). Found by a
    digest of the sweep's folder (a path may hold quotes that a filter cannot); workers that
    race to make it each make one, and all but the oldest delete theirs again."""
    experiment = _experiment(client)
    key = hashlib.sha256(str(sweep_dir.resolve()).encode()).hexdigest()[:32]
    query = f"tags.`fmnist.sweep_key` = '{key}'"

    def oldest():
        found = client.search_runs([experiment], filter_string=query, max_results=100)
        return min(found, key=lambda r: (r.info.start_time, r.info.run_id), default=None)

    if (first := oldest()) is not None:
        return first.info.run_id
    tags = {"fmnist.sweep_dir": str(sweep_dir), "fmnist.sweep_key": key}
    mine = client.create_run(experiment, run_name=f"sweep {sweep}", tags=tags).info.run_id
    first = oldest()
    if first is not None and first.info.run_id != mine:
        client.delete_run(mine)
        return first.info.run_id
    return mine
