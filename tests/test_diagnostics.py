import math

from fmnist.reports.diagnostics import check_identical, check_run


def history(train_acc=0.9, val_acc=0.89, val_losses=(0.5, 0.4, 0.35)):
    return [
        {"epoch": i + 1, "train_loss": 0.3, "train_accuracy": train_acc, "val_loss": v, "val_accuracy": val_acc}
        for i, v in enumerate(val_losses)
    ]


def test_healthy_run_has_no_flags():
    assert check_run("m", {"test_accuracy": 0.9, "test_loss": 0.3}, history()) == []


def test_chance_level_is_flagged_with_causes():
    flags = check_run("stuck", {"test_accuracy": 0.1, "test_loss": 2.3026}, history(0.1, 0.1))
    assert len(flags) == 1 and "chance" in flags[0] and "softmax applied twice" in flags[0]


def test_nan_loss_and_divergence_are_flagged():
    flags = check_run("m", {"test_accuracy": 0.5, "test_loss": math.nan}, history())
    assert any("NaN" in f for f in flags)
    flags = check_run("m", {"test_accuracy": 0.8, "test_loss": 0.5}, history(), {"epoch": 3, "step": 7})
    assert any("epoch 3, step 7" in f for f in flags)


def test_overfitting_is_flagged_and_names_the_epoch_that_is_tested():
    rows = history(0.99, 0.9, (0.3, 0.25, 0.4, 0.45))
    for row, acc in zip(rows, (0.85, 0.88, 0.91, 0.90)):
        row["val_accuracy"] = acc  # best accuracy at epoch 3, lowest loss at epoch 2
    flags = check_run("m", {"test_accuracy": 0.9, "test_loss": 0.3}, rows)
    assert any("gap" in f for f in flags)
    (loss_flag,) = [f for f in flags if "lowest at epoch 2" in f]
    assert "highest validation accuracy, epoch 3" in loss_flag


def test_identical_results_are_flagged():
    a = {"test_accuracy": 0.91, "test_loss": 0.25, "confusion_matrix": [[1, 0], [0, 1]]}
    b = {**a, "test_loss": 0.2501}
    assert check_identical({"simple_cnn": a, "deep_cnn": b}) == []
    flags = check_identical({"simple_cnn": a, "deep_cnn": dict(a)})
    assert len(flags) == 1 and "simple_cnn and deep_cnn" in flags[0]


def test_a_diverging_run_is_not_called_over_fitting():
    rows = history(0.6, 0.6, (0.5, 0.4, 0.9, 1.6))
    for row, loss, acc in zip(rows, (0.5, 0.4, 0.9, 1.7), (0.8, 0.85, 0.6, 0.3)):
        row["train_loss"], row["val_accuracy"] = loss, acc  # both losses rise: unstable training
    flags = check_run("m", {"test_accuracy": 0.85, "test_loss": 0.4}, rows)
    assert flags and not any("over-fitting:" in f or "): over-fitting" in f for f in flags)
    assert any("unstable or diverging, not over-fitting" in f and "epoch 2" in f for f in flags)


def test_the_gap_is_quoted_at_the_tested_epoch_as_the_study_table_shows_it():
    rows = history(0.95, 0.9, (0.5, 0.4, 0.38))
    rows[1]["train_accuracy"], rows[1]["val_accuracy"] = 0.99, 0.93  # best epoch 2; the last closes the gap
    rows[2]["train_accuracy"] = 0.905
    (flag,) = check_run("m", {"test_accuracy": 0.9, "test_loss": 0.3}, rows)
    assert "train accuracy 99.0%" in flag and "validation 93.0%" in flag and "epoch 2, the tested one" in flag
