"""The data audit: out-of-sample probabilities from cross-validated runs (folds.py), likely label
errors found by confident learning (labels.py), and exact and near duplicates (duplicates.py)."""
