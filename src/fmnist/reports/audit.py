"""An audit's galleries (label_issues.png, duplicates.png) and its self-contained report.html."""

from __future__ import annotations

import html

import torch

from fmnist.data import FashionMNIST
from fmnist.reports.html import html_page, html_table, img_tag
from fmnist.reports.plots import image_grid
from fmnist.run import audit as names
from fmnist.run.audit import AuditFolder

CAVEAT = (
    "Every image listed here is a candidate for a person to look at, not a verdict. A label issue "
    "is an image whose given label the cross-validated models doubt: many are truly mislabelled, "
    "others are ambiguous garments (a shirt or a top), and some are the models' own mistakes. A "
    "near duplicate is a pair of images whose pixels nearly agree after the mean image is removed: "
    "the same photograph re-cut, or two different but very plain products. The test set's issues "
    "come from one model, so they are noisier than the training set's, and the test labels the "
    "accuracy figures are measured against are themselves partly wrong."
)


def stack(images: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(images) if images else torch.zeros(0, 1, 28, 28)


def gallery(audit: AuditFolder, data: FashionMNIST, issues: list[dict], pairs: list[dict]) -> None:
    """The likeliest label issues (20 training, 10 test) and the 12 most similar duplicate pairs."""
    sets = {"train": data.train_images, "test": data.test_images}
    shown = [r for r in issues if r["split"] == "train"][:20] + [r for r in issues if r["split"] == "test"][:10]
    image_grid(
        stack([sets[r["split"]][r["index"]] for r in shown]),
        [f"{r['split']} #{r['index']}\n{r['given']} → {r['suggested']}\nscore {r['score']:.3f}" for r in shown],
        [False] * len(shown),
        audit.figure("label_issues"),
        "likely label errors: given → suggested",
        cols=6,
    )
    images, captions = [], []
    for p in pairs[:12]:
        images += [sets[p["split_a"]][p["index_a"]], sets[p["split_b"]][p["index_b"]]]
        captions += [
            f"{p['split_a']} #{p['index_a']}",
            f"{p['split_b']} #{p['index_b']}\n"
            + ("exact" if p["similarity"] == 1 else f"similarity {p['similarity']:.5f}"),
        ]
    image_grid(
        stack(images), captions, [False] * len(images), audit.figure("duplicates"), "duplicate pairs, side by side", 6
    )


def write_audit_report(
    audit: AuditFolder, data: FashionMNIST, issues: list[dict], pairs: list[dict], summary: dict
) -> None:
    gallery(audit, data, issues, pairs)
    counts = summary["label_issues"]
    dup = summary["duplicates"]
    overview = html_table(
        ["", "count"],
        [
            ["training images", f"{len(data.train_labels):,}"],
            ["test images", f"{len(data.test_labels):,}"],
            ["label issues in training", f"{counts['train']:,}"],
            ["label issues in test", f"{counts['test']:,}"],
            *[[f"exact duplicates {k}", v] for k, v in dup["exact"].items()],
            *[
                [f"near duplicates {k} (similarity ≥ {summary['settings']['similarity']})", v]
                for k, v in dup["near"].items()
            ],
        ],
    )
    folds = html_table(
        ["run", "held-out images", "held-out accuracy"],
        [[f["run"], f"{f['held_out']:,}", f"{f['held_out_accuracy']:.4f}"] for f in summary["folds"]],
    )
    body = (
        f"<p>{html.escape(CAVEAT)}</p><h2>Overview</h2>{overview}"
        f"<p>Files: <a href='{names.LABEL_ISSUES}'>{names.LABEL_ISSUES}</a>, "
        f"<a href='{names.DUPLICATES}'>{names.DUPLICATES}</a>, {names.PROBABILITIES}.</p>"
        f"<h2>Cross-validated runs</h2>{folds}"
        f"<p>The training images were predicted by the runs that left them out, averaged over "
        f"{summary['settings'].get('repeats', 1)} cross-validation(s); the test set by "
        f"{html.escape(summary['test_model']['run'])} (accuracy {summary['test_model']['test_accuracy']:.4f}).</p>"
        f"<h2>Likely label errors</h2>{img_tag(audit.file(names.FIGURES['label_issues']))}"
        f"<h3>Most frequent (given → suggested)</h3>"
        + html_table(["split", "given", "suggested", "count"], [list(p.values()) for p in counts["pairs"][:20]])
        + "<h3>The 50 likeliest</h3>"
        + html_table(list(issues[0]) if issues else ["split"], [list(r.values()) for r in issues[:50]])
        + f"<h2>Duplicates</h2>{img_tag(audit.file(names.FIGURES['duplicates']))}"
        + html_table(list(pairs[0]) if pairs else ["split_a"], [list(p.values()) for p in pairs[:50]])
    )
    audit.write_text(names.REPORT, html_page("fmnist data audit", body))
