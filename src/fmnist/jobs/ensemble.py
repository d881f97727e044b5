"""Make an ensemble run from trained runs: every check first, then the weights (chosen on the
members' shared validation split), then a run folder that every command reads as a run, tested once.

    ensemble_run([Path("runs/study/deep_cnn"), Path("runs/study/deeper_cnn")], Path("runs/pair"))
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from fmnist.data import FashionMNIST
from fmnist.errors import FmnistError, UsageError
from fmnist.inference.mixture import WEIGHTS, choose_weights, score
from fmnist.inference.onnx_export import sha256_of
from fmnist.inference.predictor import temperature_of
from fmnist.models.ensemble import KIND, is_ensemble
from fmnist.models.forward import loss_accuracy, predict_logits
from fmnist.run.folder import BEST, CONFIG, METRICS, RunFolder, load_data, split_of
from fmnist.training.config import TrainConfig, make_config

NAME = "ensemble"
SHARED = ("val_split", "exclude", "verify", "data_dir")  # the ensemble's, taken from its first member


def check_members(paths: list[Path]) -> list[RunFolder]:
    """The members' folders: two or more distinct, tested runs, none an ensemble itself."""
    if len(paths) < 2:
        raise UsageError("an ensemble needs two runs or more")
    folders = [RunFolder(p).require() for p in paths]
    seen: dict[Path, Path] = {}
    for folder in folders:
        where = folder.path.resolve()
        if where in seen:
            raise UsageError(f"{folder.path} is named twice (as {seen[where]})")
        seen[where] = folder.path
        if not folder.has_checkpoint():
            raise FmnistError(f"{folder.path} has no {BEST}: it is not trained yet")
        if "calibration" not in (folder.metrics() or {}):
            raise FmnistError(f"{folder.path} is not tested (no {METRICS}): fmnist evaluate {folder.path}")
        if is_ensemble(folder.read_config().network):
            raise UsageError(f"{folder.path} is an ensemble itself: name its members instead")
    return folders


def check_same_split(folders: list[RunFolder], configs: list[TrainConfig], data: FashionMNIST) -> torch.Tensor:
    """The validation indices every member shares; refused in one line where one member's differ
    (another fraction, split seed or excluded images), since a member trained on images another
    is validated on would make the ensemble's validation figures, and its weights, flattering."""
    first = split_of(data.train_labels, configs[0])[1]
    for folder, cfg in zip(folders[1:], configs[1:]):
        train, val = split_of(data.train_labels, cfg)
        if not torch.equal(val, first):
            seen = int(torch.isin(train, first).sum())
            raise UsageError(
                f"{folder.path} is validated on other images than {folders[0].path} (val_split "
                f"{cfg.val_split} vs {configs[0].val_split}, split seed {cfg.validation_seed()} vs "
                f"{configs[0].validation_seed()}, {len(cfg.exclude)} vs {len(configs[0].exclude)} excluded; it "
                f"trained on {seen:,} of the other's validation images): train the members with one --split-seed"
            )
    return first


def member_log_probs(model: torch.nn.Module, cfg: TrainConfig, temperature: float, images: torch.Tensor):
    """A member's calibrated log-probabilities, with the test-time views its run is tested with."""
    return (predict_logits(model, images, tta=cfg.tta, tta_shift=cfg.tta_shift) / temperature).log_softmax(1)


def ensemble_config(configs: list[TrainConfig], record: dict, quiet: bool, base: TrainConfig | None = None):
    """The ensemble run's config: its members' shared split, no training of its own; for members it
    trained (`base`, with `members` > 1), the settings they were trained with, as the run was asked."""
    first = configs[0]
    values = dataclasses.asdict(base) if base is not None else {"epochs": 1, "seed": first.seed}
    values.update({k: getattr(first, k) for k in SHARED})
    # each member's own test-time views are inside the ensemble: none outside it
    values.update(model=NAME, network=record, net_args={}, tta=False, tta_shift=0, quiet=quiet)
    values["split_seed"] = first.split_seed if base is None else base.split_seed
    return make_config(values)


def ensemble_run(
    members: list[Path],
    out: Path,
    weights: str = "auto",
    overwrite: bool = False,
    data: FashionMNIST | None = None,
    quiet: bool = False,
    trained: TrainConfig | None = None,
) -> dict:
    """An ensemble of the runs `members` in the run folder `out`, evaluated like a trained run;
    returns its metrics (with `ensemble`: the weights and how they were chosen). `trained`: the
    config of a run that trained these members inside `out` (see train_ensemble), which stays."""
    from fmnist.jobs.evaluate import evaluate_run

    if weights not in WEIGHTS:
        raise UsageError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    folders = check_members(members)
    folder = RunFolder(out)
    if any(out.resolve() == f.path.resolve() for f in folders):
        raise UsageError(f"{out} is one of the members: give the ensemble a folder of its own")
    if trained is None:
        folder.check_new(overwrite)
    configs = [f.read_config() for f in folders]
    data = data or load_data(configs[0])
    val = check_same_split(folders, configs, data)
    start = time.perf_counter()
    loaded = [f.load_model()[0] for f in folders]
    metrics = [f.metrics() for f in folders]
    temperatures = [temperature_of(m.get("calibration"), f.file(METRICS)) for m, f in zip(metrics, folders)]
    x_val, y_val = data.train_images[val], data.train_labels[val]
    log_probs = torch.stack([member_log_probs(*member, x_val) for member in zip(loaded, configs, temperatures)])
    chosen, choice = choose_weights(log_probs, y_val, configs[0].validation_seed(), weights)
    record = ensemble_record(folders, configs, metrics, temperatures, chosen / chosen.sum(), choice)
    cfg = ensemble_config(configs, record, quiet, trained)
    module = ensemble_module(cfg, loaded)
    history = [history_row(module, log_probs, y_val, cfg, data, record, time.perf_counter() - start)]
    if trained is None:
        folder.start(cfg, overwrite)
    else:  # its members' folders are in it: config.json replaced, nothing removed
        folder.write_json(CONFIG, dataclasses.asdict(cfg))
    folder.save_made({"model": module.state_dict(), "config": dataclasses.asdict(cfg), "epoch": 1}, history)
    tested = evaluate_run(folder, data)
    return {**tested, "ensemble": {"weights": [m["weight"] for m in record["members"]], **choice}}


def ensemble_record(
    folders: list[RunFolder],
    configs: list[TrainConfig],
    metrics: list[dict],
    temperatures: list[float],
    weights: torch.Tensor,
    choice: dict,
) -> dict:
    """The ensemble's `network` record: each member's run, config, temperature and weight (what
    every process builds it from), with what was known of it and how the weights were chosen."""
    names = ", ".join(c.model for c in configs)
    histories = [f.history() for f in folders]
    return {
        "kind": KIND,
        "name": NAME,
        "description": f"The calibrated probabilities of {names} averaged with {choice['chosen']} weights "
        f"({', '.join(f'{w:.3f}' for w in weights)}), each member with its own test-time views.",
        "weights": choice["chosen"],
        "members": [
            {
                "run": str(f.path),
                "config": dataclasses.asdict(c),
                "temperature": t,
                "weight": float(w),
                "checkpoint_sha256": sha256_of(f.file(BEST)),
                "val_accuracy": max(h["val_accuracy"] for h in history),
                "epochs": len(history),
                "train_seconds": m.get("train_seconds", 0.0),
            }
            for f, c, m, t, w, history in zip(folders, configs, metrics, temperatures, weights, histories)
        ],
        "choice": choice,
    }


def ensemble_module(cfg: TrainConfig, loaded: list[torch.nn.Module]) -> torch.nn.Module:
    """The ensemble built from its record, as every later command builds it, with the members'
    weights (eval mode)."""
    from fmnist.models.network import create_network

    module = create_network(cfg)
    for member, model in zip(module.members, loaded):
        member.load_state_dict(model.state_dict())
    return module.eval()


def history_row(module, log_probs, y_val, cfg: TrainConfig, data: FashionMNIST, record: dict, seconds: float):
    """The ensemble's one history row: its validation figures (as chosen), its figures on as many
    training-split images as there are validation images (in eval mode), and its time: the
    members' training and its own making."""
    on_val = score(log_probs, y_val, torch.tensor([m["weight"] for m in record["members"]]))
    train = split_of(data.train_labels, cfg)[0]
    sample = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))[: len(y_val)]]
    train_loss, train_accuracy = loss_accuracy(
        predict_logits(module, data.train_images[sample]), data.train_labels[sample]
    )
    return {
        "epoch": 1,
        "train_loss": train_loss,
        "train_accuracy": train_accuracy,
        "val_loss": on_val["log_loss"],
        "val_accuracy": on_val["accuracy"],
        "seconds": seconds,
        "elapsed": sum(m["train_seconds"] for m in record["members"]) + seconds,
        "compile_seconds": 0.0,
    }


def member_config(cfg: TrainConfig, k: int) -> TrainConfig:
    """The k-th (0-based) member of a run of `cfg.members` networks: its own seed, their one split."""
    return dataclasses.replace(cfg, members=1, seed=cfg.seed + k, split_seed=cfg.validation_seed())


def member_folder(folder: RunFolder, k: int) -> RunFolder:
    return RunFolder(folder.record(f"member-{k + 1}"))


def train_ensemble(cfg: TrainConfig, out: Path, overwrite: bool = False, data: FashionMNIST | None = None) -> dict:
    """Train `cfg.members` networks one after another into `out`'s member folders, then combine
    them into the ensemble run `out`. Every member is checked before the first trains; the run's
    config.json says what is being trained meanwhile, so a stop leaves a run `resume` finishes."""
    from fmnist.jobs.train import checked_model
    from fmnist.training.setup import check_trainable

    folder = RunFolder(out)
    folder.check_new(overwrite)
    first = member_config(cfg, 0)  # the members differ in their seed alone: what fails for one fails for all
    model, _ = checked_model(first)
    data = data or load_data(cfg)
    check_trainable(model, first, len(split_of(data.train_labels, first)[0]), 1)
    folder.start(cfg, overwrite)
    return finish_ensemble(folder, cfg, data)


def finish_ensemble(folder: RunFolder, cfg: TrainConfig, data: FashionMNIST) -> dict:
    """Train the members not yet tested (resuming a stopped one), then combine them all."""
    from fmnist.jobs.train import resume_run, train_run

    members = [member_folder(folder, k) for k in range(cfg.members)]
    for k, member in enumerate(members):
        if member.status() == "finished":
            continue
        if member.has_checkpoint(best=False):
            resume_run(member.path, {"quiet": cfg.quiet, "device": cfg.device})
        else:
            train_run(member_config(cfg, k), member.path, overwrite=True, data=data)
    return ensemble_run([m.path for m in members], folder.path, data=data, quiet=cfg.quiet, trained=cfg)
