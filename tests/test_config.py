import dataclasses

import pytest

from fmnist.errors import UsageError
from fmnist.training.config import TrainConfig, make_config, read_toml, to_toml


def test_defaults_are_the_study_settings():
    cfg = TrainConfig()
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.val_split, cfg.seed, cfg.device) == (10, 32, 1e-3, 0.1, 0, "auto")


def test_toml_round_trip(tmp_path):
    cfg = TrainConfig(model="deep_cnn", epochs=3, lr=0.01, data_dir='a "quoted" dir', quiet=True)
    (tmp_path / "c.toml").write_text(to_toml(cfg))
    assert make_config(read_toml(tmp_path / "c.toml")) == cfg


def test_later_layers_override_and_none_means_not_given(tmp_path):
    (tmp_path / "c.toml").write_text("epochs = 5\nlr = 1\n")
    cfg = make_config(read_toml(tmp_path / "c.toml"), {"epochs": 7, "lr": None})
    assert cfg.epochs == 7 and cfg.lr == 1.0 and isinstance(cfg.lr, float)


@pytest.mark.parametrize(
    "text, message",
    [
        ("epoch = 3\n", "unknown config key 'epoch'"),
        ("epochs = 'ten'\n", "'epochs' must be int"),
        ("epochs = true\n", "'epochs' must be int"),
        ("verify = 1\n", "'verify' must be bool"),
        ("epochs = \n", "cannot read config file"),
    ],
)
def test_bad_toml_names_the_key(tmp_path, text, message):
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(UsageError, match=message):
        make_config(read_toml(tmp_path / "c.toml"))


@pytest.mark.parametrize(
    "field, value",
    [("epochs", 0), ("batch_size", -1), ("lr", 0.0), ("val_split", 0.0), ("val_split", 1.0), ("device", "tpu")],
)
def test_out_of_range_values(field, value):
    with pytest.raises(UsageError, match=field if field != "device" else "device"):
        dataclasses.replace(TrainConfig(), **{field: value})


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("optimizer", "rmsprop", "optimizer must be one of adam, adamw, sgd"),
        ("schedule", "step", "schedule must be one of"),
        ("augment", "crop,rotate", "unknown augmentation 'rotate'"),
        ("warmup", 1.5, r"warmup must lie in \[0, 1\]"),
        ("ema", 1.0, r"ema must lie in \[0, 1\)"),
        ("label_smoothing", -0.1, "label_smoothing must lie"),
        ("target_accuracy", 2.0, "target_accuracy must lie"),
        ("weight_decay", -1.0, "must not be negative"),
        ("tta_shift", -1, "tta_shift must not be negative"),
    ],
)
def test_training_options_are_checked(field, value, message):
    with pytest.raises(UsageError, match=message):
        dataclasses.replace(TrainConfig(), **{field: value})


def test_a_config_saved_with_the_old_schedule_name_still_reads():
    assert make_config({"schedule": "onecycle"}).schedule == "linear"
