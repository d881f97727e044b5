"""The data audit: out-of-sample probabilities from cross-validated runs (folds.py), likely label
errors found by confident learning (labels.py), and exact and near duplicates (duplicates.py)."""

# Cross-validations an audit averages by default: the fewest whose flags agree between two seeds at a
# Jaccard of 0.8 or more, with planted label errors still found (BENCHMARKS.md, "Steadier flags");
# here, where the command line and the job both read it.
REPEATS = 11
