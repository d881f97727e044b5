"""Likely label errors by confident learning (cleanlab), from out-of-sample probabilities."""

from __future__ import annotations

from collections import Counter

import numpy as np

from fmnist.data import CLASSES

COLUMNS = ["split", "index", "given", "suggested", "score"]
# cleanlab's rule for which images to flag. Chosen on two audits of the unchanged data (agreement
# between seeds) and one with 300 planted errors (recall), never the test set: at five averaged
# cross-validations prune_by_class agreed best (Jaccard 0.74 against 0.70 for cleanlab's default
# prune_by_noise_rate) and found 97 % of the planted errors (85 %); BENCHMARKS.md has every rule.
FILTER_BY = "prune_by_class"


def label_issues(split: str, labels: np.ndarray, probs: np.ndarray, filter_by: str = FILTER_BY) -> list[dict]:
    """The images whose given label confident learning doubts, most likely wrong first. `score` is
    cleanlab's label quality (the probability of the given label): low means likely wrong."""
    from cleanlab.filter import find_label_issues  # imported here: it pulls in pandas
    from cleanlab.rank import get_label_quality_scores

    ranked = find_label_issues(labels, probs, filter_by=filter_by, return_indices_ranked_by="self_confidence", n_jobs=1)
    scores = get_label_quality_scores(labels, probs, method="self_confidence")
    suggested = probs.argmax(1)
    return [
        {
            "split": split,
            "index": int(i),
            "given": CLASSES[labels[i]],
            "suggested": CLASSES[suggested[i]],
            "score": round(float(scores[i]), 6),
        }
        for i in ranked
    ]


def pair_counts(issues: list[dict]) -> list[dict]:
    """How many issues per (split, given -> suggested), the most frequent first."""
    counts = Counter((r["split"], r["given"], r["suggested"]) for r in issues)
    return [{"split": s, "given": g, "suggested": p, "count": n} for (s, g, p), n in counts.most_common()]
