"""The sanity checks of each saliency method on trained runs, for BENCHMARKS.md ("Explanations"),
counted over each image's garment pixels (explain/sanity.py says why): (1) the share of test images
whose predicted class loses more probability when their 10 % most salient garment pixels are
removed than when 10 % random garment pixels are (passes at >= 0.8); (2) the mean Spearman rank
correlation over the garment of the maps with those of the model re-initialised layer by layer from
the top (the last step: every layer re-initialised; passes below 0.5), with each step's figure.

    .venv/bin/python benchmarks/explain_sanity.py runs/study/shallow runs/study/simple_cnn ... --images 200
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fmnist.data import load_fashion_mnist
from fmnist.explain.methods import METHODS
from fmnist.measure.sanity import sanity_checks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--images", type=int, default=200, help="the first N test images")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--stages", type=int, help="cascade depths measured (default: after every layer)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    images = load_fashion_mnist(download=False, progress=False).test_images[: args.images]
    results = {}
    print(
        f"{'run':<24} {'method':<22} {'deletion passed':>15} {'salient drop':>12} {'random drop':>11} "
        f"{'spearman':>8} {'s':>5}  cascade, top layer first"
    )
    for run in args.runs:
        for method in args.methods:
            started = time.perf_counter()
            r = sanity_checks(run, images, [method], stages=args.stages)[method]
            r["seconds"] = time.perf_counter() - started
            results.setdefault(str(run), {})[method] = r
            d = r["deletion"]
            print(
                f"{str(run):<24} {method:<22} {d['passed']:>15.3f} {d['salient_drop']:>12.3f} "
                f"{d['random_drop']:>11.3f} {r['randomisation_spearman']:>8.3f} {r['seconds']:>5.0f}  "
                + " ".join(f"{step['spearman']:.2f}" for step in r["cascade"]),
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
