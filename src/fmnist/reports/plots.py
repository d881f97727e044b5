"""The figures of a run and of a study, as PNG bytes written atomically.

Each figure is a `matplotlib.figure.Figure` drawn to PNG by its own canvas: no pyplot, no global
backend switched, nothing left open, so a notebook keeps its inline plots and a server or sweep
worker can draw from any thread.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from fmnist.data import CLASSES
from fmnist.explain.heat import heat
from fmnist.files import write_bytes


def _save(fig: Figure, path: Path, tight: bool = True) -> None:
    # A tight bounding box draws the figure twice: figures laid out by hand go without. The fastest
    # zlib level: the PNGs are a little larger and written in a fraction of the time.
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight" if tight else None, pil_kwargs={"compress_level": 1})
    write_bytes(path, buf.getvalue())


def curves(history: list[dict], path: Path, title: str = "") -> None:
    """Accuracy and loss per epoch, train vs validation, and the time-to-accuracy curve: validation
    accuracy against the training seconds by the end of each epoch."""
    epochs = [h["epoch"] for h in history]
    timed = [h for h in history if "elapsed" in h]
    fig = Figure(figsize=(15 if timed else 10, 3.8))
    axes = fig.subplots(1, 3 if timed else 2)
    for ax, key in zip(axes, ("accuracy", "loss")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", label="train")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    if timed:
        ax = axes[2]
        ax.plot([0] + [h["elapsed"] for h in timed], [0.1] + [h["val_accuracy"] for h in timed], "s-", color="C1")
        ax.set_xlabel("training seconds")
        ax.set_ylabel("validation accuracy")
        ax.set_ylim(max(0.0, min(h["val_accuracy"] for h in timed) - 0.05), 1.0)
        ax.set_title("time to accuracy")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.subplots_adjust(left=0.06 if timed else 0.08, right=0.98, bottom=0.14, top=0.86, wspace=0.25)
    _save(fig, path, tight=False)


def confusion(cm: list[list[int]], path: Path, title: str = "") -> None:
    """Confusion-matrix heat map (counts) with class names."""
    cm = np.asarray(cm)
    fig = Figure(figsize=(7, 6))
    ax = fig.subplots()
    im = ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(CLASSES)), CLASSES, rotation=45, ha="right")
    ax.set_yticks(range(len(CLASSES)), CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > cm.max() / 2 else "black")
    fig.colorbar(im, ax=ax)
    ax.set_title(title)
    fig.subplots_adjust(left=0.17, right=0.98, bottom=0.2, top=0.93)
    _save(fig, path, tight=False)


def tile_grid(
    tiles: list[np.ndarray], captions: list[str], colors: list[str], path: Path, title: str = "", cols: int = 5
) -> None:
    """Tiles (28×28 grey or 28×28×3 RGB, in [0, 1]) in rows of `cols`, each under its caption in its
    colour, drawn as one picture on one Axes: an Axes per tile cost most of a grid's drawing time."""
    rows = max(1, -(-len(tiles) // cols))
    lines = max((c.count("\n") + 1 for c in captions), default=1)
    inch = 2.2 / 31  # an image pixel's size: a 28-pixel tile between its 1- and 2-pixel margins is 2.2 in wide
    band = round((lines * 8 * 1.3 / 72 + 0.08) / inch)  # pixel rows above each tile for its 8-point caption
    cell_h, cell_w = 28 + band, 31
    canvas = np.ones((rows * cell_h, cols * cell_w, 3))
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        canvas[r * cell_h + band : (r + 1) * cell_h, c * cell_w + 1 : c * cell_w + 29] = (
            tile if tile.ndim == 3 else tile[..., None]
        )
    height = rows * cell_h * inch
    fig = Figure(figsize=(cols * cell_w * inch, height + 0.45))
    ax = fig.add_axes((0, 0, 1, height / (height + 0.45)))
    ax.imshow(canvas, interpolation="nearest", aspect="auto")
    ax.axis("off")
    for k, (caption, color) in enumerate(zip(captions, colors)):
        r, c = divmod(k, cols)
        ax.text(c * cell_w + 15, r * cell_h + band - 0.6, caption, ha="center", va="bottom", fontsize=8, color=color)
    fig.suptitle(title, y=1 - 0.08 / (height + 0.45), va="top")
    _save(fig, path, tight=False)


def image_grid(
    images: torch.Tensor, captions: list[str], wrong: list[bool], path: Path, title: str = "", cols: int = 5
) -> None:
    """Images with captions; wrong predictions in red."""
    tiles = [img.reshape(28, 28).numpy() for img in images]
    tile_grid(tiles, captions, ["red" if bad else "black" for bad in wrong], path, title, cols)


def samples(images: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor, path: Path) -> None:
    """The first 10 test images with predicted and true labels."""
    pred = probs[:10].argmax(1)
    captions = [f"pred {CLASSES[p]}\ntrue {CLASSES[t]}" for p, t in zip(pred.tolist(), labels[:10].tolist())]
    image_grid(images[:10], captions, (pred != labels[:10]).tolist(), path, "test samples (red: wrong)")


def misclassified(
    images: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor, path: Path, k: int = 10, explain=None
) -> None:
    """The k test images misclassified with the highest confidence; with `explain` (images and
    their predicted classes -> saliency maps), each beside where the model looked."""
    conf, pred = probs.max(1)
    wrong = (pred != labels).nonzero().flatten()
    top = wrong[conf[wrong].argsort(descending=True)[:k]]
    captions = [f"{CLASSES[pred[i]]} {conf[i]:.0%}\ntrue {CLASSES[labels[i]]}" for i in top.tolist()]
    if explain is None or not len(top):
        image_grid(images[top], captions, [True] * len(top), path, "most confident mistakes")
        return
    maps = explain(images[top], pred[top])
    tiles, texts = [], []
    for image, saliency, caption in zip(images[top], maps, captions):
        tiles += [image.reshape(28, 28).numpy(), heat(image, saliency)]
        texts += [caption, "where it looked"]
    tile_grid(
        tiles,
        texts,
        ["red", "black"] * len(top),
        path,
        "most confident mistakes, and where the model looked for the class it gave",
        cols=6,
    )


def compare_curves(histories: dict[str, list[dict]], path: Path) -> None:
    """Validation accuracy and loss of several models, overlaid."""
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2)
    for name, history in histories.items():
        epochs = [h["epoch"] for h in history]
        axes[0].plot(epochs, [h["val_accuracy"] for h in history], "o-", label=name)
        axes[1].plot(epochs, [h["val_loss"] for h in history], "o-", label=name)
    for ax, key in zip(axes, ("validation accuracy", "validation loss")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)


def compare_f1(f1: dict[str, list[float]], path: Path) -> None:
    """Per-class F1 of several models, as grouped bars."""
    fig = Figure(figsize=(11, 4))
    ax = fig.subplots()
    width = 0.8 / max(1, len(f1))
    x = np.arange(len(CLASSES))
    for i, (name, values) in enumerate(f1.items()):
        ax.bar(x + i * width - 0.4 + width / 2, values, width, label=name)
    ax.set_xticks(x, CLASSES, rotation=30, ha="right")
    ax.set_ylabel("F1 (test)")
    ax.set_ylim(0, 1)
    ax.legend(ncol=len(f1), fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def reliability(logits: torch.Tensor, labels: torch.Tensor, temperature: float, path: Path, bins: int = 15) -> None:
    """Reliability diagram of the test set: accuracy against confidence per equal-width bin, with
    the raw probabilities and with the validation-fitted temperature."""
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    edges = np.linspace(0, 1, bins + 1)
    for ax, (title, t) in zip(axes, (("raw", 1.0), (f"temperature {temperature:.3f}", temperature))):
        conf, pred = (logits / t).softmax(1).max(1)
        correct = (pred == labels).float().numpy()
        which = np.clip(np.digitize(conf.numpy(), edges[1:-1]), 0, bins - 1)
        counts = np.bincount(which, minlength=bins)
        accuracy = np.bincount(which, weights=correct, minlength=bins) / np.maximum(counts, 1)
        mean_conf = np.bincount(which, weights=conf.numpy(), minlength=bins) / np.maximum(counts, 1)
        shown = counts > 0
        ax.bar(edges[:-1][shown], accuracy[shown], width=1 / bins, align="edge", edgecolor="k", label="accuracy")
        ax.plot(mean_conf[shown], mean_conf[shown], "r.", label="mean confidence")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set(xlabel="confidence", ylabel="accuracy", title=title, xlim=(0, 1), ylim=(0, 1))
        ax.legend(loc="upper left")
    fig.suptitle("reliability (test set)")
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.84, wspace=0.2)
    _save(fig, path, tight=False)


def top_losses(images: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor, path: Path, k: int = 10) -> None:
    """The k test images with the highest loss: true class, predicted class and its probability."""
    loss = -probs[torch.arange(len(labels)), labels].clamp_min(1e-12).log()
    top = loss.argsort(descending=True)[:k]
    conf, pred = probs.max(1)
    captions = [
        f"#{i}: {CLASSES[pred[i]]} {conf[i]:.0%}\ntrue {CLASSES[labels[i]]}, loss {loss[i]:.1f}" for i in top.tolist()
    ]
    image_grid(images[top], captions, (pred[top] != labels[top]).tolist(), path, "highest test losses")


def overlay(image: torch.Tensor, saliency: torch.Tensor, caption: str, path: Path) -> None:
    """One image beside its saliency overlay, with a caption (predicted class and probability)."""
    fig = Figure(figsize=(4.4, 2.6))
    axes = fig.subplots(1, 2)
    axes[0].imshow(image.reshape(28, 28).numpy(), cmap="gray", vmin=0, vmax=1)
    axes[1].imshow(heat(image, saliency))
    for ax in axes:
        ax.axis("off")
    fig.suptitle(caption, fontsize=9)
    _save(fig, path)
