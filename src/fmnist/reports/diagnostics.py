"""Checks that make the original study's mistakes loud: a net stuck at chance, a NaN loss,
two models with identical results, over-fitting."""

from __future__ import annotations

import math

CHANCE = 0.1
NEAR_CHANCE = 0.2  # anything below this on 10 balanced classes learned next to nothing
GAP = 0.03  # train minus validation accuracy that signals over-fitting
CHANCE_CAUSES = (
    "inputs not scaled to [0, 1], labels one-hot encoded where integers are expected "
    "(or the reverse), a learning rate too high, or softmax applied twice (the loss "
    "expects logits)"
)


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def check_run(name: str, metrics: dict, history: list[dict], diverged: dict | None = None) -> list[str]:
    """Flags for one trained model: chance-level accuracy, NaN loss, over-fitting."""
    flags = []
    if diverged:
        flags.append(
            f"{name}: training stopped because the loss became NaN or infinite at "
            f"epoch {diverged['epoch']}, step {diverged['step']}; results come from the "
            f"last good checkpoint. Likely causes: {CHANCE_CAUSES}."
        )
    losses = [h[k] for h in history for k in ("train_loss", "val_loss")] + [metrics.get("test_loss")]
    if not diverged and not all(_finite(v) for v in losses):
        flags.append(f"{name}: a loss is NaN or infinite. Likely causes: {CHANCE_CAUSES}.")
    acc = metrics.get("test_accuracy")
    if acc is not None and acc < NEAR_CHANCE:
        flags.append(
            f"{name}: test accuracy {acc:.1%} is at or near chance ({CHANCE:.0%}). Likely causes: {CHANCE_CAUSES}."
        )
    if history and not diverged and all(_finite(h["train_loss"]) for h in history):
        last, best = history[-1], max(history, key=lambda h: h["val_accuracy"])  # the first best: best.pt
        gap = best["train_accuracy"] - best["val_accuracy"]
        lowest_loss_epoch = int(min(history, key=lambda h: h["val_loss"])["epoch"])
        # the training loss rising with the validation loss is instability, not over-fitting
        unstable = last["train_loss"] > 1.1 * min(h["train_loss"] for h in history)
        if gap > GAP:  # at the tested epoch, as the study's table shows it
            flags.append(
                f"{name}: over-fitting: train accuracy {best['train_accuracy']:.1%} vs "
                f"validation {best['val_accuracy']:.1%} (gap {gap:.1%}) at epoch {best['epoch']}, the tested one."
            )
        risen = lowest_loss_epoch < last["epoch"] and last["val_loss"] > 1.1 * min(h["val_loss"] for h in history)
        if risen and unstable:
            flags.append(
                f"{name}: the training loss rose too, to {last['train_loss']:.3f} (lowest "
                f"{min(h['train_loss'] for h in history):.3f}): training is unstable or diverging, not "
                "over-fitting; try a lower --lr (the tested checkpoint is the epoch of highest validation "
                f"accuracy, epoch {best_accuracy_epoch(history)})."
            )
        elif risen:
            flags.append(
                f"{name}: validation loss was lowest at epoch {lowest_loss_epoch} and has risen "
                f"since to {last['val_loss']:.3f}: over-fitting (the tested checkpoint is the "
                f"epoch of highest validation accuracy, epoch {best_accuracy_epoch(history)})."
            )
    return flags


def best_accuracy_epoch(history: list[dict]) -> int:
    """The epoch best.pt holds: the first with the highest validation accuracy."""
    return int(max(history, key=lambda h: h["val_accuracy"])["epoch"])


def check_identical(results: dict[str, dict]) -> list[str]:
    """Flag pairs of different models whose test results are exactly the same."""
    flags = []
    names = list(results)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ra, rb = results[a], results[b]
            if ra.get("confusion_matrix") == rb.get("confusion_matrix") and ra.get("test_loss") == rb.get("test_loss"):
                flags.append(
                    f"{a} and {b} have identical test results (accuracy "
                    f"{ra.get('test_accuracy', float('nan')):.2%}, same loss and confusion "
                    "matrix): one was probably evaluated or reported in place of the other."
                )
    return flags
