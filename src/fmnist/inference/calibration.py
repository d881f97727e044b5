"""Calibration (Guo et al. 2017): one temperature that divides the logits, fitted on the validation
split by minimising its negative log-likelihood, never on the test set; and the expected calibration
error (torchmetrics, 15 equal-width confidence bins) and NLL of the test set before and after."""

from __future__ import annotations

import torch
import torch.nn.functional as F

BINS = 15
LIMITS = (0.05, 20.0)  # a separable validation set would drive the temperature to 0: bounded


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T minimising the NLL of softmax(logits / T) on these (validation) images."""
    logits = logits.clone()  # predictions come from inference mode; autograd needs an ordinary tensor
    low, high = (torch.tensor(v).log() for v in LIMITS)
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.clamp(low, high).exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().clamp(low, high).exp())


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor) -> float:
    from torchmetrics.functional.classification import multiclass_calibration_error

    return float(multiclass_calibration_error(probs, labels, num_classes=probs.shape[1], n_bins=BINS, norm="l1"))


def calibrate(
    val_logits: torch.Tensor, val_labels: torch.Tensor, test_logits: torch.Tensor, test_labels: torch.Tensor
) -> dict:
    """metrics.json's `calibration`: the temperature (from validation) and the test set's ECE and NLL."""
    t = fit_temperature(val_logits, val_labels)
    return {
        "temperature": t,
        "ece_before": expected_calibration_error(test_logits.softmax(1), test_labels),
        "ece_after": expected_calibration_error((test_logits / t).softmax(1), test_labels),
        "nll_before": F.cross_entropy(test_logits, test_labels).item(),
        "nll_after": F.cross_entropy(test_logits / t, test_labels).item(),
        "bins": BINS,
        "fitted_on": "validation",
    }
