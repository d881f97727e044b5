"""`fmnist data`, `fmnist models` and `fmnist bench`: the dataset, the model registry, and speed."""

from __future__ import annotations

import argparse
from pathlib import Path

from fmnist.cli.flags import NetArg, add_data_flags
from fmnist.errors import UsageError
from fmnist.inference.predictor import BACKENDS
from fmnist.models.study import STUDY_MODELS


def cmd_data(args) -> int:
    from fmnist.data import CLASSES, class_counts, load_fashion_mnist

    data = load_fashion_mnist(args.data_dir, verify=args.verify is not False, progress=not args.quiet)
    print(
        f"Fashion-MNIST from {data.directory} (found via {data.origin}; "
        f"{'SHA-256 verified' if data.verified else 'NOT verified'})"
    )
    train, test = class_counts(data.train_labels), class_counts(data.test_labels)
    print(f"{'class':<12} {'train':>6} {'test':>6}")
    for name, a, b in zip(CLASSES, train, test):
        print(f"{name:<12} {a:>6} {b:>6}")
    print(f"{'total':<12} {sum(train):>6} {sum(test):>6}")
    return 0


def cmd_models(args) -> int:
    from fmnist.models import count_params, create_model, describe, flops_per_image, list_models

    if args.network:
        return show_network(args.network, args.net_args or {})
    if args.net_args:
        raise UsageError("--net-arg goes with a network file or class: fmnist models FILE --net-arg NAME=VALUE")
    print(f"{'model':<12} {'params':>10} {'MFLOP/img':>10}  description")
    for name in list_models():
        model = create_model(name)
        flops = flops_per_image(model)["forward"] / 1e6
        print(f"{name:<12} {count_params(model):>10,} {flops:>10.2f}  {describe(name)}")
    return 0


def show_network(model: str, net_args: dict) -> int:
    """One network's layers (index, type, output shape, parameters), total parameters and FLOPs."""
    from fmnist.models import count_params, describe, flops_per_image
    from fmnist.models.network import create_network, module_rows, network_rows, resolve_network
    from fmnist.training.config import TrainConfig

    cfg = resolve_network(TrainConfig(model=model, net_args=net_args))
    network = create_network(cfg)
    rows = network_rows(cfg) or module_rows(network)
    description = (cfg.network or {}).get("description", "") or (describe(cfg.model) if not cfg.network else "")
    print(f"{cfg.model}" + (f": {description}" if description else ""))
    print(f"{'layer':<6} {'type':<24} {'output':>12} {'params':>10}")
    for index, kind, shape, params in rows:
        print(f"{index:<6} {kind:<24} {'×'.join(map(str, shape)):>12} {params:>10,}")
    flops = flops_per_image(network)["forward"]
    print(f"total {count_params(network):,} parameters, {flops / 1e6:.2f} MFLOP per image (forward)")
    return 0


def cmd_bench(args) -> int:
    from fmnist.data import load_fashion_mnist
    from fmnist.files import write_json
    from fmnist.jobs.bench import run_bench

    if args.formats is not None or args.runs:
        return bench_formats_cmd(args)
    if args.epochs < 1 or args.batch_size < 1:
        raise UsageError("--epochs and --batch-size must be at least 1")
    backends = tuple(dict.fromkeys(b.strip() for b in args.backend.split(",") if b.strip()))
    if not backends or set(backends) - set(BACKENDS):
        raise UsageError(f"--backend: a comma-separated list of {', '.join(BACKENDS)}, got {args.backend!r}")
    data = load_fashion_mnist(args.data_dir, verify=args.verify is not False, progress=not args.quiet)
    result = run_bench(
        data, args.models, args.batch_size, args.epochs, args.device or "auto", args.quiet, backends, args.train
    )
    print_bench(result, backends, args.train)
    if args.json:
        write_json(Path(args.json), result)
    return 0


def bench_formats_cmd(args) -> int:
    from fmnist.cli.serve import serve_sources
    from fmnist.files import write_json
    from fmnist.jobs.formats import FORMATS, bench_formats, format_table, parse_formats

    if not args.runs:
        raise UsageError("--formats measures trained runs: name run or study folders (fmnist bench --formats F RUN...)")
    formats = parse_formats(args.formats or ",".join(FORMATS))
    result = bench_formats(serve_sources(args.runs), formats, args.data_dir, args.verify, args.quiet)
    m = result["machine"]
    print(f"{m['cpu']} ({m['cores']} cores, AVX-512 {'yes' if m['avx512'] else 'no'}), torch {m['torch']}")
    print(format_table(result))
    if args.json:
        write_json(Path(args.json), result)
    return 0


def print_bench(result: dict, backends: tuple[str, ...], train: bool) -> None:
    m = result["machine"]
    print(
        f"{m['cpu']} ({m['cores']} cores, {m['torch_threads']} threads, AVX-512 {'yes' if m['avx512'] else 'no'}), "
        f"torch {m['torch']}, device {m['device']}; fp32 matmul {result['matmul_gflops']:.0f} GFLOP/s"
    )
    if train:
        print(f"{'model':<12} {'epoch s':>8} {'img/s':>8} {'train GF/s':>10} {'RSS MB':>7}")
        for r in result["models"]:
            print(
                f"{r['name']:<12} {r['epoch_seconds']:>8.2f} {r['train_images_per_second']:>8.0f} "
                f"{r['train_gflops']:>10.1f} {r['peak_rss_mb']:>7.0f}"
            )
    print(
        f"{'model':<12} {'backend':<7} {'predict s':>9} {'latency ms':>10} {'p99 ms':>7} {'b256 img/s':>10} "
        f"{'pred GF/s':>9}"
    )
    for r in result["models"]:
        for b in backends:
            x = r[b]
            print(
                f"{r['name']:<12} {b:<7} {x['predict_test_seconds']:>9.3f} {x['latency_ms']:>10.3f} "
                f"{x['latency_p99_ms']:>7.3f} {x['batch256_images_per_second']:>10.0f} {x['predict_gflops']:>9.1f}"
            )


def add_parsers(sub) -> None:
    p = sub.add_parser("data", help="find or fetch the dataset, verify it, show per-class counts")
    add_data_flags(p)
    p.add_argument("--quiet", action="store_true", help="no download progress bar")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser(
        "models", help="list the registered models with parameters and FLOPs, or show one network's layers"
    )
    p.add_argument(
        "network",
        nargs="?",
        metavar="MODEL|FILE.toml|FILE.py:Class",
        help="show this network's layer table (a registered model, a network file or a class)",
    )
    p.add_argument("--net-arg", dest="net_args", action=NetArg, metavar="NAME=VALUE", help="the network's arguments")
    p.set_defaults(func=cmd_models)

    add_bench_parser(sub)


def add_bench_parser(sub) -> None:
    p = sub.add_parser(
        "bench", help="measure training and prediction speed on the real data, or trained runs in every format"
    )
    p.add_argument(
        "runs",
        nargs="*",
        metavar="RUN",
        help="with --formats: trained run or study folders, each measured in each format",
    )
    p.add_argument(
        "--formats",
        metavar="torch,onnx,int8,openvino",
        help="deployable formats to export, check and measure for the RUNs, comma-separated (default all four)",
    )
    p.add_argument(
        "--models",
        nargs="+",
        metavar="MODEL",
        default=STUDY_MODELS,
        help="models to measure (default: the study's four)",
    )
    p.add_argument("--batch-size", type=int, default=32, help="training batch size (default 32)")
    p.add_argument("--epochs", type=int, default=1, help="measured epochs after a warm-up (default 1)")
    p.add_argument("--device", help="auto, cpu, cuda (default auto)")
    p.add_argument(
        "--backend",
        default="torch",
        metavar="torch,onnx",
        help="prediction backends to measure, comma-separated (default torch)",
    )
    p.add_argument(
        "--train",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure training epochs (default on; --no-train measures prediction only)",
    )
    add_data_flags(p)
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_bench)
