"""The Keras reference for BENCHMARKS.md: the study's four models in Keras, timed on this machine.

Not part of fmnist; it needs TensorFlow and Keras in their own environment:
    python3 -m venv /tmp/keras && /tmp/keras/bin/pip install "tensorflow-cpu==2.21.*" "keras==3.15.*"
    /tmp/keras/bin/python benchmarks/keras_reference.py --json keras.json

Same settings as `fmnist bench`: batch 32, Adam (lr 1e-3), cross-entropy, the 54,000 training
images left after the 10 % validation split; one short fit first so tracing is not timed.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import time

import keras
import numpy as np
from keras import layers

DATA = os.environ.get("FMNIST_DATA_DIR", "/usr/share/datasets/fashion-mnist")


def read_idx(name: str) -> np.ndarray:
    with gzip.open(os.path.join(DATA, name)) as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def conv(c: int, padding: str = "valid", bn: bool = False) -> list:
    out = [layers.Conv2D(c, 3, padding=padding)]
    return out + ([layers.BatchNormalization()] if bn else []) + [layers.ReLU()]


def build(name: str) -> keras.Model:
    inp = [keras.Input((28, 28, 1))]
    if name == "shallow":
        body = [layers.Flatten(), layers.Dense(128, "relu"), layers.Dense(10)]
    elif name == "simple_cnn":
        body = [*conv(32), layers.MaxPooling2D(), layers.Flatten(), layers.Dense(128, "relu"), layers.Dense(10)]
    elif name == "deep_cnn":
        body = [
            *conv(32),
            layers.MaxPooling2D(),
            *conv(64),
            layers.MaxPooling2D(),
            *conv(128),
            layers.Flatten(),
            layers.Dense(128, "relu"),
            layers.Dropout(0.5),
            layers.Dense(10),
        ]
    else:

        def stage(c):
            return [*conv(c, "same", True), *conv(c, "same"), layers.MaxPooling2D(), layers.Dropout(0.25)]

        body = [
            *stage(32),
            *stage(64),
            *conv(128, "same", True),
            layers.Flatten(),
            layers.Dense(256, "relu"),
            layers.Dropout(0.5),
            layers.Dense(128, "relu"),
            layers.Dense(10),
        ]
    model = keras.Sequential(inp + body)
    model.compile(
        keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    return model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["shallow", "simple_cnn", "deep_cnn", "deeper_cnn"])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--json")
    parser.add_argument(
        "--predict-only",
        action="store_true",
        help="time prediction and latency only (untrained weights: speed does not depend on them)",
    )
    args = parser.parse_args()
    x = read_idx("train-images-idx3-ubyte.gz")[..., None].astype("float32") / 255
    y = read_idx("train-labels-idx1-ubyte.gz").astype("int64")
    xt = read_idx("t10k-images-idx3-ubyte.gz")[..., None].astype("float32") / 255
    x, y = x[:54000], y[:54000]  # the same count as fmnist's training split
    rows = []
    for name in args.models:
        keras.utils.set_random_seed(0)
        model = build(name)
        seconds = []
        if not args.predict_only:
            model.fit(x[:960], y[:960], batch_size=32, epochs=1, verbose=0)  # trace the train step
        for _ in range(0 if args.predict_only else args.epochs):
            start = time.perf_counter()
            model.fit(x, y, batch_size=32, epochs=1, verbose=0)
            seconds.append(time.perf_counter() - start)
        model.predict(xt[:64], verbose=0)
        times = []
        for _ in range(3):  # the best of three, as fmnist bench takes
            start = time.perf_counter()
            model.predict(xt, verbose=0)  # Keras's default batch of 32
            times.append(time.perf_counter() - start)
        predict = min(times)
        one = xt[:1]
        model(one, training=False)
        lat = []
        for _ in range(50):
            start = time.perf_counter()
            model(one, training=False)
            lat.append(time.perf_counter() - start)
        row = {
            "name": name,
            "epoch_seconds": statistics.median(seconds) if seconds else None,
            "predict_test_seconds": predict,
            "latency_ms": 1e3 * statistics.median(lat),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"keras": keras.__version__, "models": rows}, f, indent=1)


if __name__ == "__main__":
    main()
