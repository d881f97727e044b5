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
