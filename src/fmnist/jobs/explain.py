"""`fmnist explain`: where a model looked, per image, for the class it predicted: an overlay PNG per
image and saliency.npy (float32 [N, 28, 28]), for a run folder (any method) or an .onnx file
(occlusion)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from fmnist.data import CLASSES, load_fashion_mnist
from fmnist.data.images import load_image
from fmnist.errors import UsageError
from fmnist.explain.methods import check_method, saliency_maps, torch_forward
from fmnist.inference.predictor import load_predictor
from fmnist.reports.plots import overlay
from fmnist.run.folder import RunFolder
from fmnist.run.written import Folder

SALIENCY = "saliency.npy"


class ExplainFolder(Folder):
    WRITES = frozenset({SALIENCY, "explain.json"})

    def written_names(self) -> frozenset[str]:
        return self.WRITES | {name for name in self.recorded() if name.endswith(".png")}


def explainer(source: Path, method: str):
    """The forward function `method` explains, and the predictor that gives the answers shown."""
    if source.is_dir():
        model, _, _ = RunFolder(source).require().load_model()
        check_method(method, gradients=True)
        return torch_forward(model), load_predictor(source, "torch")
    predictor = load_predictor(source)
    check_method(method, gradients=False)
    return predictor.logits, predictor


def explain_images(
    source: Path,
    files: list[Path],
    test: int,
    method: str,
    out: Path,
    data_dir: str | None = None,
    verify: bool | None = None,
    overwrite: bool = False,
) -> list[dict]:
    """Write per-image overlays and saliency.npy into `out`; returns what each image got."""
    if not files and test < 1:
        raise UsageError("give IMAGE files or --test N (the first N test images)")
    folder = ExplainFolder(out)
    folder.check_new(overwrite)
    forward, predictor = explainer(Path(source), method)
    images, names = [load_image(f) for f in files], [f.name for f in files]
    if test > 0:
        data = load_fashion_mnist(data_dir, verify=verify is not False, progress=False)
        images += list(data.test_images[:test])
        names += [f"test-{i}" for i in range(min(test, len(data.test_images)))]
    batch = torch.stack(images)
    probs = predictor.probabilities(batch)
    target = probs.argmax(1)
    maps = saliency_maps(forward, batch, target, method)
    folder.prepare(overwrite)
    buf = io.BytesIO()
    np.save(buf, maps.numpy().astype(np.float32))
    folder.write_bytes(SALIENCY, buf.getvalue())
    results = []
    for i, (name, image, m) in enumerate(zip(names, batch, maps)):
        label, p = CLASSES[target[i]], float(probs[i, target[i]])
        png = f"{i:03d}-{Path(name).stem}.png"
        overlay(image, m, f"{name}: {label} {p:.1%}\n({method})", folder.record(png))
        results.append({"file": name, "overlay": png, "label": label, "probability": p})
    folder.write_json("explain.json", {"source": str(source), "method": method, "images": results})
    return results
