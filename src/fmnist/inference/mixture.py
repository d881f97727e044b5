"""An ensemble's weights: fitted on the shared validation split, or uniform, whichever validates
better. Fitted weights are judged on images they were not fitted on (two-fold cross-validation
inside the validation split), so the choice between them and uniform is not made on the very
images the fit saw; the test set takes no part."""

from __future__ import annotations

import torch

WEIGHTS = ("auto", "fitted", "uniform")
FOLDS = 2


def mixture(log_probs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """log Σ_m w_m p_m for members' log-probabilities (M, N, C) and weights (M,)."""
    return torch.logsumexp(log_probs + weights.log()[:, None, None], 0)


def score(log_probs: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> dict[str, float]:
    mixed = mixture(log_probs, weights)
    return {
        "log_loss": float(-mixed[torch.arange(len(labels)), labels].mean()),
        "accuracy": float((mixed.argmax(1) == labels).float().mean()),
    }


def fit_weights(log_probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The weights (on the simplex, through a softmax) minimising the mixture's log loss."""
    picked = log_probs[:, torch.arange(len(labels)), labels].clone()  # (M, N): each member's p of the true class
    theta = torch.zeros(len(log_probs), requires_grad=True)
    optimizer = torch.optim.LBFGS([theta], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = -torch.logsumexp(picked + theta.log_softmax(0)[:, None], 0).mean()
        loss.backward()
        return loss

    optimizer.step(closure)
    weights = theta.detach().softmax(0).clamp_min(1e-6)  # a member all but dropped keeps a weight log can take
    return weights / weights.sum()


def choose_weights(
    log_probs: torch.Tensor, labels: torch.Tensor, seed: int, mode: str = "auto"
) -> tuple[torch.Tensor, dict]:
    """The ensemble's weights and how they were chosen: `auto` keeps fitted weights only where their
    cross-validated log loss beats uniform weights' on the same held-out halves."""
    from sklearn.model_selection import StratifiedKFold

    m = len(log_probs)
    uniform = torch.full((m,), 1.0 / m)
    held_out: dict[str, list[dict]] = {"uniform": [], "fitted": []}
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(labels.numpy(), labels.numpy())
    for fit_idx, test_idx in folds:
        fit_idx, test_idx = torch.from_numpy(fit_idx), torch.from_numpy(test_idx)
        fitted = fit_weights(log_probs[:, fit_idx], labels[fit_idx])
        held_out["fitted"].append(score(log_probs[:, test_idx], labels[test_idx], fitted))
        held_out["uniform"].append(score(log_probs[:, test_idx], labels[test_idx], uniform))
    cv = {
        name: {k: sum(s[k] for s in scores) / len(scores) for k in ("log_loss", "accuracy")}
        for name, scores in held_out.items()
    }
    fitted = fit_weights(log_probs, labels)
    if mode == "auto":
        mode = "fitted" if cv["fitted"]["log_loss"] < cv["uniform"]["log_loss"] else "uniform"
    weights = fitted if mode == "fitted" else uniform
    return weights, {
        "chosen": mode,
        "on": f"{FOLDS}-fold cross-validation inside the validation split ({len(labels):,} images)",
        "cross_validated": cv,
        "fitted_weights": [float(w) for w in fitted],
        "validation": {"uniform": score(log_probs, labels, uniform), "fitted": score(log_probs, labels, fitted)},
    }
