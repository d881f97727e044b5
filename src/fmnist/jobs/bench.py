"""`fmnist bench`: training and prediction speed per model on the real data, beside the machine's
own fp32 matmul rate measured in the same run. Prediction is measured for each backend asked for
(PyTorch, ONNX Runtime), through the same loader `predict` and the server use."""

from __future__ import annotations

import dataclasses
import os
import platform
import resource
import statistics
import time

import torch
from tqdm.auto import tqdm

from fmnist.data import FashionMNIST
from fmnist.device import resolve_device
from fmnist.inference.predictor import Predictor, model_predictor
from fmnist.models import flops_per_image
from fmnist.models.forward import prepare
from fmnist.models.network import create_network, resolve_network
from fmnist.progress import bars
from fmnist.run.folder import split_of
from fmnist.training.config import TrainConfig
from fmnist.training.loop import epoch_data, train_epoch
from fmnist.training.setup import make_trainer

WARMUP_STEPS = 30
LATENCY_CALLS = 1000  # single-image calls timed for the median and the 99th percentile
THROUGHPUT_BATCH = 256


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
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        cpu = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    except (OSError, StopIteration):
        pass
    device = resolve_device("auto")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "avx512": " avx512f" in flags,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_training(
    model_cfg: TrainConfig, data: FashionMNIST, batch_size: int, epochs: int, device: torch.device, quiet: bool = True
) -> dict:
    """Seconds per training epoch: the median of `epochs` after a warm-up of a few steps."""
    cfg, name = dataclasses.replace(model_cfg, batch_size=batch_size, quiet=quiet), model_cfg.model
    train_idx, _ = split_of(data.train_labels, cfg)
    x, y = data.train_images[train_idx].to(device), data.train_labels[train_idx].to(device)
    torch.manual_seed(0)
    model = prepare(create_network(cfg), device)
    steps = (len(x) + batch_size - 1) // batch_size
    trainer = make_trainer(model, cfg, steps)
    gen = torch.Generator().manual_seed(0)
    warm = min(len(x), WARMUP_STEPS * batch_size)  # warm-up: allocator, oneDNN kernel choice
    train_epoch(trainer, x[:warm], y[:warm], torch.randperm(warm, generator=gen).to(device), batch_size)
    seconds = []
    for epoch in range(epochs):
        _sync(device)
        start = time.perf_counter()
        with tqdm(total=steps, desc=f"bench {name}", disable=not bars(quiet), leave=False) as bar:
            order, images = epoch_data(x, cfg, gen)
            train_epoch(
                trainer, images, y, order, batch_size, epoch=epoch + 1, report=lambda done, *_: bar.update(done - bar.n)
            )
        _sync(device)
        seconds.append(time.perf_counter() - start)
    epoch_s = statistics.median(seconds)
    images_per_s = len(x) / epoch_s
    return {
        "epoch_seconds": epoch_s,
        "epochs_measured": len(seconds),
        "train_images": len(x),
        "train_images_per_second": images_per_s,
        "train_gflops": flops_per_image(create_network(cfg))["train"] * images_per_s / 1e9,
    }


def bench_inference(predictor: Predictor, images: torch.Tensor, forward_flops: int) -> dict:
    """One backend's prediction speed: single-image latency (median and 99th percentile of many
    calls), batch-256 throughput, and the time to predict all of `images` (the test set)."""
    one = images[:1].contiguous()
    for _ in range(50):
        predictor.logits(one)
    lat = []
    for _ in range(LATENCY_CALLS):
        start = time.perf_counter()
        predictor.logits(one)
        lat.append(time.perf_counter() - start)
    batch = images[:THROUGHPUT_BATCH].contiguous()
    predictor.logits(batch)
    per_batch = []
    for _ in range(20):
        start = time.perf_counter()
        predictor.logits(batch)
        per_batch.append(time.perf_counter() - start)
    predictor.logits(images[:1000])
    whole = []
    for _ in range(3):
        start = time.perf_counter()
        predictor.logits(images)
        whole.append(time.perf_counter() - start)
    predict_s = min(whole)
    lat.sort()
    return {
        "latency_ms": statistics.median(lat) * 1e3,
        "latency_p99_ms": lat[int(0.99 * len(lat))] * 1e3,
        "batch256_images_per_second": THROUGHPUT_BATCH / statistics.median(per_batch),
        "predict_test_seconds": predict_s,
        "predict_gflops": forward_flops * len(images) / predict_s / 1e9,
    }


def predictors_for(cfg: TrainConfig, backends: list[str], device: torch.device) -> dict[str, Predictor]:
    """The same freshly initialised model through each backend, built by the loader `predict` and
    `serve` use (speed does not depend on the weights; no test-time views, as a plain run has none)."""
    torch.manual_seed(0)
    model = prepare(create_network(cfg), device).eval()
    return {backend: model_predictor(model, cfg, backend, cfg.model, cfg.model) for backend in backends}


def reset_peak_rss() -> bool:
    """Start a new peak of resident memory for this process (Linux: clear_refs 5); False where
    that cannot be done."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """This process's peak resident memory since the last reset_peak_rss (Linux's VmHWM), else since it began."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_bench(
    data: FashionMNIST,
    models: list[str],
    batch_size: int = 32,
    epochs: int = 1,
    device: str = "auto",
    quiet: bool = False,
    backends: tuple[str, ...] = ("torch",),
    train: bool = True,
) -> dict:
    dev = resolve_device(device)
    configs = [resolve_network(TrainConfig(model=name)) for name in models]
    for cfg in configs:
        create_network(cfg)  # unknown names, bad files and classes fail before any measuring
    if {"onnx", "openvino"} & set(backends) and dev.type != "cpu":
        from fmnist.errors import UsageError

        raise UsageError("--backend onnx and openvino are measured on the CPU; use --device cpu")
    result = {
        "machine": machine(),
        "matmul_gflops": matmul_gflops(),
        "batch_size": batch_size,
        "backends": list(backends),
        "models": [],
    }
    test = data.test_images.to(dev)
    for cfg in configs:
        row = {"name": cfg.model, "peak_rss_own": reset_peak_rss()}
        if train:
            row.update(bench_training(cfg, data, batch_size, epochs, dev, quiet))
        flops = flops_per_image(create_network(cfg))["forward"]
        for backend, predictor in predictors_for(cfg, list(backends), dev).items():
            row[backend] = bench_inference(predictor, test, flops)
        row["peak_rss_mb"] = peak_rss_mb()  # this model's alone where the peak could be reset
        result["models"].append(row)
        if not quiet:
            tqdm.write(
                f"{cfg.model}: "
                + (f"{row['epoch_seconds']:.1f} s/epoch, " if train else "")
                + ", ".join(
                    f"{b} predict {row[b]['predict_test_seconds']:.3f} s, latency {row[b]['latency_ms']:.3f} ms"
                    for b in backends
                )
            )
    result["matmul_gflops_after"] = matmul_gflops()  # a drift between the two means a busy machine
    return result
