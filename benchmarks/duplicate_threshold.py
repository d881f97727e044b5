"""Why near duplicates start at a cosine similarity of 0.99 (README, "Auditing the data"): how
similar each real image's nearest neighbour is, against how similar a copy of an image with pixel
noise stays, both measured as `fmnist audit` measures (the mean training image removed, full pixels).

    .venv/bin/python benchmarks/duplicate_threshold.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fmnist.audit.duplicates import neighbour_pairs
from fmnist.data import load_fashion_mnist


def main() -> None:
    data = load_fashion_mnist(download=False, progress=False)
    pixels = torch.cat([data.train_images, data.test_images]).reshape(-1, 784).float()
    mean = pixels[: len(data.train_images)].mean(0)
    unit = F.normalize(pixels - mean, dim=1)
    best = torch.full((len(pixels),), -1.0)
    pairs = torch.tensor(sorted(neighbour_pairs(pixels - mean)))
    for start in range(0, len(pairs), 8192):
        a, b = pairs[start : start + 8192].T
        sim = (unit[a] * unit[b]).sum(1)
        best.scatter_reduce_(0, a, sim, "amax")
        best.scatter_reduce_(0, b, sim, "amax")
    levels = torch.tensor([0.5, 0.9, 0.99, 0.999])
    print("nearest neighbour of each of the", len(pixels), "images (5 candidates from the PCA projection):")
    print("  quantiles 50/90/99/99.9 %:", [round(q, 4) for q in torch.quantile(best, levels).tolist()])
    for threshold in (0.97, 0.98, 0.99, 0.995):
        print(f"  images whose nearest neighbour is at >= {threshold}: {int((best >= threshold).sum())}")
    gen = torch.Generator().manual_seed(0)
    originals = pixels[:2000]
    for sigma in (0.01, 0.02, 0.03, 0.05):
        noisy = (originals + sigma * torch.randn(originals.shape, generator=gen)).clamp(0, 1)
        sim = (F.normalize(noisy - mean, dim=1) * unit[:2000]).sum(1)
        print(
            f"copies with Gaussian pixel noise sigma {sigma} ({sigma * 255:.0f} grey levels), 2,000 images: "
            f"min {sim.min():.4f}, 1 % {torch.quantile(sim, 0.01):.4f}, median {sim.median():.4f}"
        )


if __name__ == "__main__":
    main()
