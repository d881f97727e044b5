"""`fmnist bench --formats`: each trained run in each deployable format, measured side by side in one
process and one run: whether it exported and passed its checks, file size, test accuracy,
single-image latency, batch-256 throughput and peak memory. A format that fails is a row saying why.

Files are exported into a temporary folder (a run's own files are not touched). `torch` is the run's
best.pt through PyTorch; `onnx` its checked export on ONNX Runtime; `int8` the statically quantised
export on ONNX Runtime; `openvino` the float export on OpenVINO's CPU plugin.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tqdm.auto import tqdm

from fmnist.errors import FmnistError
from fmnist.inference.onnx_export import ExportError
from fmnist.inference.predictor import Predictor, load_onnx_file, model_predictor
from fmnist.inference.quantize import QuantizeError
from fmnist.jobs.bench import bench_inference, machine, peak_rss_mb, reset_peak_rss
from fmnist.models import flops_per_image
from fmnist.run.folder import BEST, RunFolder

FORMATS = ("torch", "onnx", "int8", "openvino")
CHECKED, FAILED, NOT_EXPORTED = "exported and checked", "exported but failed a check", "not exported"


def parse_formats(text: str) -> tuple[str, ...]:
    from fmnist.errors import UsageError

    formats = tuple(dict.fromkeys(f.strip() for f in text.split(",") if f.strip()))
    if not formats or set(formats) - set(FORMATS):
        raise UsageError(f"--formats: a comma-separated list of {', '.join(FORMATS)}, got {text!r}")
    return formats


def _made(fmt: str, run: RunFolder, model, cfg, data, folder: Path) -> tuple[Predictor, Path]:
    """The run in format `fmt`, ready to answer, and the file it answers from."""
    from fmnist.jobs.export import export_int8, export_run

    if fmt == "torch":
        return model_predictor(model, cfg, "torch", run.path.name, str(run.path)), run.file(BEST)
    if fmt == "int8":
        path = folder / "model.int8.onnx"
        export_int8(run.path, path, data=data)
        return load_onnx_file(path), path
    path = folder / "model.onnx"
    if not path.is_file():
        export_run(run.path, path, data=data)
    return load_onnx_file(path, "openvino" if fmt == "openvino" else "onnx"), path


def bench_formats(
    runs: list[Path],
    formats: tuple[str, ...] = FORMATS,
    data_dir: str | None = None,
    verify: bool | None = None,
    quiet: bool = False,
) -> dict:
    """A row per run and format (see the module's docstring)."""
    rows = []
    for run_dir in runs:
        run = RunFolder(run_dir).require()
        model, cfg, _ = run.load_model()
        data = run.data(cfg, data_dir, verify)
        flops = flops_per_image(model)["forward"]
        with tempfile.TemporaryDirectory(prefix="fmnist-formats-") as tmp:
            for fmt in formats:
                row = {"run": str(run.path), "model": cfg.model, "format": fmt}
                own_peak = reset_peak_rss()
                try:
                    predictor, path = _made(fmt, run, model, cfg, data, Path(tmp))
                    logits = predictor.logits(data.test_images)
                    speed = bench_inference(predictor, data.test_images, flops)
                except (ExportError, QuantizeError) as e:
                    rows.append(row | {"status": FAILED, "reason": str(e)})
                    continue
                except (FmnistError, ImportError) as e:
                    rows.append(row | {"status": NOT_EXPORTED, "reason": str(e)})
                    continue
                rows.append(
                    row
                    | {
                        "status": CHECKED,
                        "file": path.name,
                        "size_mb": path.stat().st_size / 2**20,
                        "test_accuracy": (logits.argmax(1) == data.test_labels).float().mean().item(),
                        "latency_ms": speed["latency_ms"],
                        "batch256_images_per_second": speed["batch256_images_per_second"],
                        "peak_rss_mb": peak_rss_mb(),
                        "peak_rss_own": own_peak,
                    }
                )
                if not quiet:
                    tqdm.write(f"{run.path.name} {fmt}: {rows[-1]['test_accuracy']:.4f}, {speed['latency_ms']:.3f} ms")
    return {"machine": machine(), "formats": list(formats), "rows": rows}


def format_table(result: dict) -> str:
    """Ultralytics' benchmark table, one line per run and format."""
    lines = [
        f"{'run':<16} {'format':<9} {'status':<28} {'size MB':>8} {'test acc':>8} {'ms/img':>8} "
        f"{'b256 img/s':>10} {'peak MB':>8}"
    ]
    for r in result["rows"]:
        name = Path(r["run"]).name[:16]
        if r["status"] != CHECKED:
            lines.append(f"{name:<16} {r['format']:<9} {r['status']:<28} {r['reason']}")
            continue
        lines.append(
            f"{name:<16} {r['format']:<9} {r['status']:<28} {r['size_mb']:>8.2f} {r['test_accuracy']:>8.4f} "
            f"{r['latency_ms']:>8.3f} {r['batch256_images_per_second']:>10.0f} {r['peak_rss_mb']:>8.0f}"
        )
    return "\n".join(lines)
