"""The data audit: out-of-sample probabilities from cross-validated runs (folds.py), likely label
errors found by confident learning (labels.py), and exact and near duplicates (duplicates.py)."""

# Cross-validations an audit averages by default, chosen on agreement between seeds and on planted
# label errors (BENCHMARKS.md, "Steadier flags"); here, where the command line and the job both read it.
REPEATS = 5
