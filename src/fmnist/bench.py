"""`fmnist bench`: training and prediction speed per model on the real data, beside the machine's
own fp32 matmul rate measured in the same run."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time

import torch
from tqdm import tqdm

from .config import TrainConfig
from .data import FashionMNIST, stratified_split
from .device import resolve_device
from .infer import layout, predict_logits, prepare
from .models import create_model, flops_per_image
from .progress import bars
from .train import epoch_data, make_trainer, train_epoch

WARMUP_STEPS = 30


def matmul_gflops(size: int = 1024, seconds: float = 1.0) -> float:
    """The fp32 matrix-multiply rate of this machine (or GPU), in GFLOP/s."""
    device = resolve_device("auto")
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    for _ in range(3):
        a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * size**3 * n / (time.perf_counter() - start) / 1e9


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    device = resolve_device("auto")
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_model(name: str, data: FashionMNIST, batch_size: int, epochs: int, device: torch.device,
                quiet: bool = True) -> dict:
    """Seconds per training epoch (median after a warm-up), prediction and single-image latency."""
    cfg = TrainConfig(model=name, batch_size=batch_size, quiet=quiet)
    train_idx, _ = stratified_split(data.train_labels, cfg.val_split, cfg.seed)
    x, y = data.train_images[train_idx].to(device), data.train_labels[train_idx].to(device)
    torch.manual_seed(0)
    model = prepare(create_model(name), device)
    steps = (len(x) + batch_size - 1) // batch_size
    trainer = make_trainer(model, cfg, steps)
    gen = torch.Generator().manual_seed(0)
    with tqdm(disable=True) as bar:  # warm-up: allocator, oneDNN kernel choice
        warm = min(len(x), WARMUP_STEPS * batch_size)
        train_epoch(trainer, x[:warm], y[:warm], torch.randperm(warm, generator=gen).to(device), batch_size, bar, 0)
    seconds = []
    for epoch in range(epochs):
        _sync(device)
        start = time.perf_counter()
        with tqdm(total=steps, desc=f"bench {name}", disable=not bars(quiet), leave=False) as bar:
            order, images = epoch_data(x, cfg, gen)
            train_epoch(trainer, images, y, order, batch_size, bar, epoch + 1)
        _sync(device)
        seconds.append(time.perf_counter() - start)
    epoch_s = statistics.median(seconds)

    test = data.test_images.to(device)
    predict_logits(model, test[:1000])
    times = []
    for _ in range(3):
        _sync(device)
        start = time.perf_counter()
        predict_logits(model, test)
        _sync(device)
        times.append(time.perf_counter() - start)
    predict_s = min(times)

    model.eval()
    one = layout(model, test[:1])
    lat = []
    with torch.inference_mode():
        for _ in range(200):
            start = time.perf_counter()
            model(one).argmax()
            _sync(device)
            lat.append(time.perf_counter() - start)
    flops = flops_per_image(create_model(name))
    images_per_s = len(x) / epoch_s
    return {"name": name, "epoch_seconds": epoch_s, "epochs_measured": len(seconds),
            "train_images": len(x), "train_images_per_second": images_per_s,
            "predict_test_seconds": predict_s, "latency_ms": statistics.median(lat[20:]) * 1e3,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "train_gflops": flops["train"] * images_per_s / 1e9,
            "predict_gflops": flops["forward"] * len(test) / predict_s / 1e9}


def run_bench(data: FashionMNIST, models: list[str], batch_size: int = 32, epochs: int = 1,
              device: str = "auto", quiet: bool = False) -> dict:
    dev = resolve_device(device)
    for name in models:
        create_model(name)  # unknown names fail before any measuring
    result = {"machine": machine(), "matmul_gflops": matmul_gflops(), "batch_size": batch_size,
              "models": []}
    for name in models:
        row = bench_model(name, data, batch_size, epochs, dev, quiet)
        result["models"].append(row)
        if not quiet:
            tqdm.write(f"{name}: {row['epoch_seconds']:.1f} s/epoch, predict {row['predict_test_seconds']:.2f} s, "
                       f"latency {row['latency_ms']:.2f} ms")
    result["matmul_gflops_after"] = matmul_gflops()  # a drift between the two means a busy machine
    return result
