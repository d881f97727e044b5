"""`fmnist evaluate`, `fmnist export` and `fmnist predict`: using a trained run or an exported file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fmnist.cli.flags import add_data_flags, add_trust_flag
from fmnist.inference.predictor import BACKENDS, DEFAULT_BACKEND
from fmnist.run.study import StudyFolder


def cmd_evaluate(args) -> int:
    from fmnist.data import load_fashion_mnist
    from fmnist.inference.predictor import load_predictor
    from fmnist.jobs.evaluate import evaluate_predictor, evaluate_run

    source = Path(args.source)
    if StudyFolder(source).exists() and args.backend in (None, "torch"):
        from fmnist.jobs.study import reevaluate_study

        summary = reevaluate_study(StudyFolder(source), args.data_dir, args.verify)
        for m in summary["models"]:
            print(f"{m['name']}: test accuracy {m['test_accuracy']:.4f}")
        print(f"wrote each run's metrics.json and report.html, and {source / 'report.html'}")
        return 0
    if source.is_dir() and args.backend in (None, "torch"):
        metrics = evaluate_run(source, data_dir=args.data_dir, verify=args.verify)
        print(
            f"test accuracy {metrics['test_accuracy']:.4f}, loss {metrics['test_loss']:.4f}, "
            f"top-2 {metrics['top2_accuracy']:.4f}; wrote {source}/metrics.json and report.html"
        )
        return 0
    predictor = load_predictor(source, args.backend, hint="THROUGHPUT")  # the whole test set at once
    data = load_fashion_mnist(args.data_dir, verify=args.verify is not False, progress=False)
    metrics = evaluate_predictor(predictor, data)
    recorded = predictor.info.get("test_accuracy")
    print(
        f"test accuracy {metrics['test_accuracy']:.4f}, loss {metrics['test_loss']:.4f}, "
        f"top-2 {metrics['top2_accuracy']:.4f} ({predictor.backend}"
        + (f"; the run recorded {recorded:.4f}" if recorded is not None else "")
        + ")"
    )
    return 0


def cmd_export(args) -> int:
    from fmnist.errors import UsageError
    from fmnist.inference.onnx_export import sidecar_path
    from fmnist.jobs.export import export_int8, export_run
    from fmnist.run.folder import RunFolder

    if args.format == "triton":
        return export_triton(args)
    if args.triton_backend:
        raise UsageError("--triton-backend goes with --format triton")
    if args.int8:
        out = Path(args.out) if args.out else RunFolder(args.run_dir).export_path().with_suffix(".int8.onnx")
        d = export_int8(Path(args.run_dir), out, data_dir=args.data_dir, verify=args.verify)
        q = d["int8"]
        print(
            f"wrote {out} and {sidecar_path(out).name} (int8, {q['calibration_method']} calibration on "
            f"{q['calibration_images']}): validation accuracy {q['val_accuracy']:.4f} (float "
            f"{q['float_val_accuracy']:.4f}), test {q['test_accuracy']:.4f} (float {q['float_test_accuracy']:.4f})"
        )
        return 0
    out = Path(args.out) if args.out else RunFolder(args.run_dir).export_path()
    d = export_run(Path(args.run_dir), out, data_dir=args.data_dir, verify=args.verify)
    diffs = d["checks"]["max_abs_logit_difference"]
    print(
        f"wrote {out} and {sidecar_path(out).name} ({d['source']['model']}, opset {d['opset']}, "
        f"sha256 {d['sha256'][:12]}…); checks passed: onnx full check, BatchNorm in inference mode, "
        f"ONNX Runtime = PyTorch within {max(diffs.values()):.1e} at batch {', '.join(diffs)}"
    )
    return 0


def export_triton(args) -> int:
    from fmnist.cli.serve import serve_sources
    from fmnist.errors import UsageError
    from fmnist.inference.triton_repo import write_repository

    if not args.out:
        raise UsageError("--format triton needs --out DIR, the model repository's folder")
    if args.int8:
        raise UsageError("--int8 writes an .onnx file; a Triton repository holds the float export")
    written = write_repository(
        serve_sources([args.run_dir]), Path(args.out), args.triton_backend or "onnxruntime", args.data_dir, args.verify
    )
    for w in written:
        accuracy = w["export"]["source"]["test_accuracy"]
        figure = f"test accuracy {accuracy:.4f}" if isinstance(accuracy, float) else "not yet tested"
        print(f"wrote {w['folder']} (config.pbtxt, labels.txt, 1/model.onnx; {figure})")
    print(f"Triton model repository: {args.out} ({args.triton_backend or 'onnxruntime'} backend)")
    return 0


def cmd_predict(args) -> int:
    from fmnist.jobs.predict import predict_files

    results = predict_files(Path(args.source), [Path(p) for p in args.images], args.top_k, args.backend)
    if args.json:
        print(json.dumps(results, indent=2))
    for r in results:
        if "error" in r:
            print(f"error: {r['error']}", file=sys.stderr)
        elif not args.json:
            print(f"{r['file']}: " + ", ".join(f"{p['label']} {p['probability']:.1%}" for p in r["predictions"]))
    return 1 if any("error" in r for r in results) else 0


def cmd_explain(args) -> int:
    from fmnist.jobs.explain import explain_images

    results = explain_images(
        Path(args.source),
        [Path(f) for f in args.images],
        args.test,
        args.method,
        Path(args.out),
        args.data_dir,
        args.verify,
        args.overwrite,
    )
    for r in results:
        print(f"{r['file']}: {r['label']} {r['probability']:.1%} ({Path(args.out) / r['overlay']})")
    print(f"maps: {Path(args.out) / 'saliency.npy'} ({len(results)} x 28 x 28, float32, {args.method})")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="recompute a run's (or each of a study's runs') test metrics and figures, or test an .onnx file",
    )
    p.add_argument(
        "source",
        metavar="RUN_DIR|FILE.onnx",
        help="a run folder (its best.pt; metrics.json and the figures are rewritten), a study folder "
        "(each run's, then the study's report) or an exported .onnx file (the figures are printed)",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        help="for a run folder: torch (default; writes the run's files), onnx or openvino (print only); "
        "for an .onnx file: onnx (default) or openvino",
    )
    add_data_flags(p)
    add_trust_flag(p)
    p.set_defaults(func=cmd_evaluate)

    add_export_parser(sub)
    add_predict_parser(sub)
    add_explain_parser(sub)


def add_export_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="write a run's tested model as ONNX (float or int8) or runs as a Triton model repository"
    )
    p.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        help="a run folder written by 'fmnist train' or 'fmnist study' (with --format triton, a study folder too)",
    )
    p.add_argument(
        "--out",
        metavar="FILE.onnx|DIR",
        help="where to write it (default RUN_DIR/model.onnx, or model.int8.onnx); its description goes to "
        "FILE.onnx.json; with --format triton, the repository's folder",
    )
    p.add_argument(
        "--format",
        choices=("onnx", "triton"),
        default="onnx",
        help="onnx (default): one file; triton: a Triton model repository, one model per run",
    )
    p.add_argument(
        "--triton-backend",
        choices=("onnxruntime", "python"),
        help="the repository's backend: onnxruntime (default; Triton's container, KServe) or python "
        "(ONNX Runtime inside Triton's Python backend: the PyPI tritonserver serves it)",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="statically quantised (QDQ), calibrated on training-split images; refused where it loses more "
        "than half a point of validation accuracy",
    )
    add_data_flags(p)
    add_trust_flag(p)
    p.set_defaults(func=cmd_export)


def add_predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="classify your own image files with a trained run or an .onnx file")
    p.add_argument(
        "source",
        metavar="RUN_DIR|FILE.onnx",
        help="a run folder written by 'fmnist train' or 'fmnist study', or a file from 'fmnist export'",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, JPEG, ... any size, colour or grey")
    p.add_argument("--top-k", type=int, default=3, help="classes to show per image, 1-10 (default 3)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        help=f"for a run folder: torch, onnx or openvino (default {DEFAULT_BACKEND}, the faster one measured); "
        "for an .onnx file: onnx (ONNX Runtime, default) or openvino",
    )
    add_trust_flag(p)
    p.set_defaults(func=cmd_predict)


def add_explain_parser(sub) -> None:
    from fmnist.explain.methods import DEFAULT_METHOD, METHODS

    p = sub.add_parser("explain", help="where a model looked: saliency maps and overlays for images")
    p.add_argument("source", metavar="RUN_DIR|FILE.onnx", help="a run folder (any method) or an .onnx file (occlusion)")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files (as `fmnist predict` reads them)")
    p.add_argument("--test", type=int, default=0, metavar="N", help="also the first N test images, in file order")
    p.add_argument(
        "--method", choices=METHODS, default=DEFAULT_METHOD, help=f"Captum's method (default {DEFAULT_METHOD})"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the overlays and saliency.npy")
    p.add_argument("--overwrite", action="store_true", help="replace what fmnist wrote in DIR")
    add_data_flags(p)
    add_trust_flag(p)
    p.set_defaults(func=cmd_explain)
