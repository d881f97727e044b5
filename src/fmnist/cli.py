"""The `fmnist` command: argparse subcommands mapped onto the config and the workflow.

    fmnist study                  # train and compare the four models, write the report
    fmnist train deep_cnn --epochs 10 --out runs/deep
    fmnist predict runs/deep shirt.jpg
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import traceback
from pathlib import Path

from . import distributed
from .config import HYPER, RUN, TrainConfig, field_types, list_recipes, make_config, read_recipe, read_toml
from .data import CLASSES, class_counts, load_fashion_mnist
from .errors import FmnistError, UsageError
from .files import read_json, write_json
from .models import count_params, create_model, describe, flops_per_image, list_models
from .predictors import BACKENDS, DEFAULT_BACKEND, check_backend


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + message
        raise UsageError(f"{self.prog}: {message}")


def add_data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="folder with the four Fashion-MNIST files (default: discover)")
    p.add_argument("--no-verify", dest="verify", action="store_const", const=False,
                   help="use data files whose SHA-256 does not match (explicit opt-in)")


def _default_text(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return repr(value) if value == "" else str(value)


def add_config_flags(p: argparse.ArgumentParser, names: list[str],
                     training: str = "training (any recipe or --config value is overridden by these)") -> None:
    """One flag per TrainConfig field in `names`, its help and default read from the field; a flag
    not given stays None, so the recipe, the config file and the defaults below it keep their say."""
    types = field_types()
    groups = {HYPER: p.add_argument_group(training), RUN: p.add_argument_group("where and how it runs")}
    for f in dataclasses.fields(TrainConfig):
        kind = f.metadata["kind"]
        if f.name not in names:
            continue
        flag = "--" + f.name.replace("_", "-")
        text = f"{f.metadata['help']} (default {_default_text(f.default)})"
        if types[f.name] is bool:
            groups[kind].add_argument(flag, action=argparse.BooleanOptionalAction, help=text)
        else:
            metavar = {int: "N", float: "X"}.get(types[f.name], f.name.upper())
            groups[kind].add_argument(flag, type=types[f.name], metavar=metavar, help=text)


def add_train_flags(p: argparse.ArgumentParser) -> None:
    """The config's flags (all but the model, which each command names its own way), the recipe and
    config file they override, and the output folder."""
    p.add_argument("--recipe", choices=list_recipes(),
                   help="start from a shipped recipe (config file); --config and flags override it")
    p.add_argument("--config", metavar="FILE.toml", help="TOML file of config keys; flags override it")
    add_config_flags(p, [n for n in TrainConfig.fields_of(HYPER, RUN) if n != "model"])
    p.add_argument("--overwrite", action="store_true",
                   help="replace an output folder that fmnist wrote (its old files are removed first)")


def given_flags(args: argparse.Namespace) -> dict:
    """The TrainConfig fields among the parsed flags (None where a flag was not given)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(make_config())
            if hasattr(args, f.name)}


def config_from(args: argparse.Namespace, **fixed):
    """Defaults, then the recipe, then the config file, then the flags given."""
    return make_config(read_recipe(args.recipe) if args.recipe else {},
                       read_toml(args.config) if args.config else {}, given_flags(args), fixed)


def cmd_data(args) -> int:
    data = load_fashion_mnist(args.data_dir, verify=args.verify is not False, progress=not args.quiet)
    print(f"Fashion-MNIST from {data.directory} (found via {data.origin}; "
          f"{'SHA-256 verified' if data.verified else 'NOT verified'})")
    train, test = class_counts(data.train_labels), class_counts(data.test_labels)
    print(f"{'class':<12} {'train':>6} {'test':>6}")
    for name, a, b in zip(CLASSES, train, test):
        print(f"{name:<12} {a:>6} {b:>6}")
    print(f"{'total':<12} {sum(train):>6} {sum(test):>6}")
    return 0


def cmd_models(args) -> int:
    print(f"{'model':<12} {'params':>10} {'MFLOP/img':>10}  description")
    for name in list_models():
        model = create_model(name)
        flops = flops_per_image(model)["forward"] / 1e6
        print(f"{name:<12} {count_params(model):>10,} {flops:>10.2f}  {describe(name)}")
    return 0


def cmd_train(args) -> int:
    from .workflow import resume_run, train_run
    if not args.model and not args.recipe:
        raise UsageError("fmnist train: give a MODEL or a --recipe (to continue a run: fmnist resume RUN_DIR)")
    cfg = config_from(args, model=args.model)
    dist = distributed.from_environment()
    if dist.active and not args.out:
        raise UsageError("with several processes (torchrun), give --out: every process must name the same folder")
    out = Path(args.out or f"runs/{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}")
    dist, device = distributed.init(cfg.device)
    cfg = dataclasses.replace(cfg, device=device)
    try:
        if dist.restarts and (out / "last.pt").is_file():  # torchrun restarted us: go on from the checkpoint
            return print_run(cfg.model, out, resume_run(out, {"device": device, "quiet": cfg.quiet}, dist), dist)
        overwrite = args.overwrite or dist.restarts > 0  # a restart before the first checkpoint starts afresh
        return print_run(cfg.model, out, train_run(cfg, out, overwrite=overwrite, dist=dist), dist)
    finally:
        distributed.shutdown()


def cmd_resume(args) -> int:
    from .workflow import resume_run
    out = Path(args.run_dir)
    overrides = given_flags(args)
    dist, device = distributed.init(overrides.get("device") or read_json(out / "config.json").get("device", "auto")
                                    if out.is_dir() else "auto")
    if dist.active:
        overrides["device"] = device
    try:
        return print_run(read_config_model(out), out, resume_run(out, overrides, dist), dist)
    finally:
        distributed.shutdown()


def print_run(model: str, out: Path, metrics: dict, dist: distributed.Dist | None = None) -> int:
    if dist is not None and not dist.is_main:
        return 0  # the first process reports for all
    target = metrics.get("target")
    if target and target["reached"]:
        print(f"{model}: validation accuracy reached {target['val_accuracy']:.4f} at epoch {target['epoch']} "
              f"after {target['seconds']:.1f} s of training")
    elif target:
        print(f"{model}: validation accuracy never reached {target['val_accuracy']:.4f}")
    print(f"{model}: test accuracy {metrics['test_accuracy']:.4f}, loss {metrics['test_loss']:.4f} "
          f"(best epoch {metrics['best_epoch']}"
          + (f" after {metrics['best_seconds']:.1f} s" if "best_seconds" in metrics else "")
          + f"; {metrics['train_seconds']:.1f} s of training"
          + (f", {metrics['compile_seconds']:.1f} s compiling" if metrics.get("compile_seconds") else "")
          + f"); run folder {out}")
    for flag in metrics["diagnostics"]:
        print(f"warning: {flag}", file=sys.stderr)
    return 0


def read_config_model(run_dir: Path) -> str:
    return make_config(read_json(run_dir / "config.json")).model


def cmd_evaluate(args) -> int:
    from .predictors import load_predictor
    from .workflow import evaluate_predictor, evaluate_run
    source = Path(args.source)
    if source.is_dir() and args.backend in (None, "torch"):
        metrics = evaluate_run(source)
        print(f"test accuracy {metrics['test_accuracy']:.4f}, loss {metrics['test_loss']:.4f}, "
              f"top-2 {metrics['top2_accuracy']:.4f}; wrote {source}/metrics.json and report.html")
        return 0
    predictor = load_predictor(source, args.backend)
    data = load_fashion_mnist(args.data_dir, verify=args.verify is not False, progress=False)
    metrics = evaluate_predictor(predictor, data)
    recorded = predictor.info.get("test_accuracy")
    print(f"test accuracy {metrics['test_accuracy']:.4f}, loss {metrics['test_loss']:.4f}, "
          f"top-2 {metrics['top2_accuracy']:.4f} ({predictor.backend}"
          + (f"; the run recorded {recorded:.4f}" if recorded is not None else "") + ")")
    return 0


def cmd_export(args) -> int:
    from .export import export_run, sidecar_path
    out = Path(args.out) if args.out else Path(args.run_dir) / "model.onnx"
    d = export_run(Path(args.run_dir), out)
    diffs = d["checks"]["max_abs_logit_difference"]
    print(f"wrote {out} and {sidecar_path(out).name} ({d['source']['model']}, opset {d['opset']}, "
          f"sha256 {d['sha256'][:12]}…); checks passed: onnx full check, BatchNorm in inference mode, "
          f"ONNX Runtime = PyTorch within {max(diffs.values()):.1e} at batch {', '.join(diffs)}")
    return 0


def cmd_study(args) -> int:
    from .workflow import run_study
    base = config_from(args)
    out = Path(args.out or f"runs/study-{time.strftime('%Y%m%d-%H%M%S')}")
    summary = run_study(args.models or ["shallow", "simple_cnn", "deep_cnn", "deeper_cnn"], base, out,
                        overwrite=args.overwrite)
    print(f"{'model':<12} {'params':>10} {'val acc':>8} {'test acc':>8} {'train s':>8}")
    for m in summary["models"]:
        print(f"{m['name']:<12} {m['params']:>10,} {m['val_accuracy']:>8.4f} {m['test_accuracy']:>8.4f} "
              f"{m['train_seconds']:>8.0f}")
    for flag in summary["diagnostics"]:
        print(f"warning: {flag}", file=sys.stderr)
    print(f"report: {out / 'report.html'}")
    return 0


def cmd_predict(args) -> int:
    from .workflow import predict_files
    if args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {args.top_k}")
    results = predict_files(Path(args.source), [Path(p) for p in args.images], args.top_k, args.backend)
    if args.json:
        print(json.dumps(results, indent=2))
    for r in results:
        if "error" in r:
            print(f"error: {r['error']}", file=sys.stderr)
        elif not args.json:
            print(f"{r['file']}: " + ", ".join(f"{p['class']} {p['probability']:.1%}" for p in r["predictions"]))
    return 1 if any("error" in r for r in results) else 0


def cmd_bench(args) -> int:
    from .bench import run_bench
    if args.epochs < 1 or args.batch_size < 1:
        raise UsageError("--epochs and --batch-size must be at least 1")
    backends = tuple(dict.fromkeys(b.strip() for b in args.backend.split(",") if b.strip()))
    if not backends or set(backends) - set(BACKENDS):
        raise UsageError(f"--backend: a comma-separated list of {', '.join(BACKENDS)}, got {args.backend!r}")
    data = load_fashion_mnist(args.data_dir, verify=args.verify is not False, progress=not args.quiet)
    result = run_bench(data, args.models, args.batch_size, args.epochs, args.device or "auto", args.quiet,
                       backends, args.train)
    m = result["machine"]
    print(f"{m['cpu']} ({m['cores']} cores, {m['torch_threads']} threads, AVX-512 {'yes' if m['avx512'] else 'no'}), "
          f"torch {m['torch']}, device {m['device']}; fp32 matmul {result['matmul_gflops']:.0f} GFLOP/s")
    if args.train:
        print(f"{'model':<12} {'epoch s':>8} {'img/s':>8} {'train GF/s':>10} {'RSS MB':>7}")
        for r in result["models"]:
            print(f"{r['name']:<12} {r['epoch_seconds']:>8.2f} {r['train_images_per_second']:>8.0f} "
                  f"{r['train_gflops']:>10.1f} {r['peak_rss_mb']:>7.0f}")
    print(f"{'model':<12} {'backend':<7} {'predict s':>9} {'latency ms':>10} {'p99 ms':>7} {'b256 img/s':>10} "
          f"{'pred GF/s':>9}")
    for r in result["models"]:
        for b in backends:
            x = r[b]
            print(f"{r['name']:<12} {b:<7} {x['predict_test_seconds']:>9.3f} {x['latency_ms']:>10.3f} "
                  f"{x['latency_p99_ms']:>7.3f} {x['batch256_images_per_second']:>10.0f} {x['predict_gflops']:>9.1f}")
    if args.json:
        write_json(Path(args.json), result)
    return 0


def study_runs(folder: Path = Path("runs/study")) -> list[Path]:
    """The run folders of the last `make study`, in the study's order."""
    summary = folder / "summary.json"
    if summary.is_file():
        runs = [Path(m["run_dir"]) for m in read_json(summary)["models"]]
        return [r for r in runs if (r / "best.pt").is_file()]
    return sorted(p.parent for p in folder.glob("*/best.pt"))


def cmd_serve(args) -> int:
    try:
        import uvicorn

        from .serve import Settings, create_app
    except ImportError as e:
        raise FmnistError(f"fmnist serve needs the serve extra ({e.name} is missing): "
                          "pip install 'fmnist[serve]'") from None
    sources = [Path(s) for s in args.sources] or study_runs()
    if not sources:
        raise FmnistError("nothing to serve: name run folders or .onnx files, or run 'make study' first "
                          "(fmnist serve alone serves runs/study/*)")
    for s in sources:
        if not s.exists():
            raise FmnistError(f"{s} does not exist (give a run folder or an .onnx file)")
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port must be 1-65535, got {args.port}")
    if args.max_body_mb <= 0 or args.max_images < 1:
        raise UsageError("--max-body-mb and --max-images must be positive")
    check_backend(args.backend)
    settings = Settings(max_body_bytes=int(args.max_body_mb * 1024 * 1024), max_images=args.max_images,
                        backend=args.backend)
    app = create_app(sources, settings)
    print(f"serving {', '.join(str(s) for s in sources)} on http://{args.host}:{args.port}/ "
          f"(API docs at /docs; Ctrl-C stops)", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    except SystemExit as e:  # uvicorn exits when it cannot bind the address
        raise FmnistError(f"cannot serve on {args.host}:{args.port} (in use, or not an address here)") from e
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fmnist", description="Train, compare and use Fashion-MNIST classifiers.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("data", help="find or fetch the dataset, verify it, show per-class counts")
    add_data_flags(p)
    p.add_argument("--quiet", action="store_true", help="no download progress bar")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("models", help="list the registered models with parameters and FLOPs")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("train", help="train one model into a run folder")
    p.add_argument("model", nargs="?", help=f"one of: {', '.join(list_models())}")
    p.add_argument("--out", help="run folder (default runs/MODEL-TIMESTAMP)")
    add_train_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("resume", help="continue a stopped run from its last.pt, or make it longer")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by 'fmnist train'")
    # The only settings a resume may change: its length (upwards), and where and how it runs.
    add_config_flags(p, TrainConfig.resumable(), "the run's length (default: as it was; more epochs run a new "
                                                 "schedule cycle over the added ones)")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("evaluate", help="recompute a run's test metrics and figures, or test an .onnx file")
    p.add_argument("source", metavar="RUN_DIR|FILE.onnx",
                   help="a run folder (its best.pt; metrics.json and the figures are rewritten) or an exported "
                        ".onnx file (the figures are printed)")
    p.add_argument("--backend", choices=BACKENDS,
                   help="for a run folder: torch (default; writes the run's files) or onnx (prints only)")
    add_data_flags(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="write a run's tested model as ONNX, checked against PyTorch")
    p.add_argument("run_dir", help="a run folder written by 'fmnist train' or 'fmnist study'")
    p.add_argument("--out", metavar="FILE.onnx", help="where to write it (default RUN_DIR/model.onnx); "
                   "its description goes to FILE.onnx.json")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("study", help="train and compare models under identical settings")
    p.add_argument("--models", nargs="+", metavar="MODEL",
                   help=f"models to compare (default: the study's four); any of {', '.join(list_models())}")
    p.add_argument("--out", help="study folder (default runs/study-TIMESTAMP)")
    add_train_flags(p)
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("predict", help="classify your own image files with a trained run or an .onnx file")
    p.add_argument("source", metavar="RUN_DIR|FILE.onnx",
                   help="a run folder written by 'fmnist train' or 'fmnist study', or a file from 'fmnist export'")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, JPEG, ... any size, colour or grey")
    p.add_argument("--top-k", type=int, default=3, help="classes to show per image (default 3)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--backend", choices=BACKENDS,
                   help=f"for a run folder: torch or onnx (default {DEFAULT_BACKEND}, the faster one measured)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("serve", help="a JSON API and a page where you upload or draw a garment")
    p.add_argument("sources", nargs="*", metavar="RUN_OR_ONNX",
                   help="run folders or .onnx files (default: the runs of the last 'make study', runs/study/*)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--backend", choices=BACKENDS,
                   help=f"for run folders: torch or onnx (default {DEFAULT_BACKEND}, the faster one measured)")
    p.add_argument("--max-body-mb", type=float, default=10.0,
                   help="largest request body, refused with 413 before it is read (default 10)")
    p.add_argument("--max-images", type=int, default=16, help="images in one /predict request (default 16)")
    p.set_defaults(func=cmd_serve)

    from .sweep.commands import add_sweep_parsers  # here: it builds on this module's Parser
    add_sweep_parsers(sub)

    p = sub.add_parser("bench", help="measure training and prediction speed on the real data")
    p.add_argument("--models", nargs="+", metavar="MODEL",
                   default=["shallow", "simple_cnn", "deep_cnn", "deeper_cnn"],
                   help="models to measure (default: the study's four)")
    p.add_argument("--batch-size", type=int, default=32, help="training batch size (default 32)")
    p.add_argument("--epochs", type=int, default=1, help="measured epochs after a warm-up (default 1)")
    p.add_argument("--device", help="auto, cpu, cuda (default auto)")
    p.add_argument("--backend", default="torch", metavar="torch,onnx",
                   help="prediction backends to measure, comma-separated (default torch)")
    p.add_argument("--train", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure training epochs (default on; --no-train measures prediction only)")
    add_data_flags(p)
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]  # accepted anywhere on the line
    where = distributed.from_environment().where()  # "[process 1 of 2] " under torchrun
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except FmnistError as e:
        if debug:
            traceback.print_exc()
        print(f"fmnist: error: {where}{e}", file=sys.stderr)
        return e.exit_code
    except RuntimeError as e:
        if not where or not distributed.is_group_failure(e):
            raise
        if debug:
            traceback.print_exc()
        print(f"fmnist: error: {where}another process of the run failed or stopped, so this one stops too "
              f"({str(e).strip().splitlines()[0]})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"fmnist: {where}interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # a disk full or a permission denied that no lower layer expected
        if debug:
            traceback.print_exc()
        print(f"fmnist: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
