"""`fmnist serve`: every model loaded and warmed up before the port opens, or one line and exit 1."""

from __future__ import annotations

import sys
from pathlib import Path

from fmnist.cli.flags import add_trust_flag
from fmnist.errors import FmnistError, UsageError
from fmnist.inference.predictor import BACKENDS, DEFAULT_BACKEND, check_backend
from fmnist.serve.settings import UVICORN, Settings


def serve_sources(names: list[str]) -> list[Path]:
    """What to serve: the named run folders and .onnx files (a study's folder stands for its runs),
    or, with none named, the runs of the newest study under runs/."""
    from fmnist.run.folder import RunFolder
    from fmnist.run.study import StudyFolder, latest_study

    if not names:
        study = latest_study()
        if study is None:
            raise FmnistError(
                "nothing to serve: name run folders or .onnx files, or run a study first "
                "(fmnist serve alone serves the newest study under runs/)"
            )
        return [run.path for run in study.runs()]
    sources = []
    for name in map(Path, names):
        if not name.exists():
            raise FmnistError(f"{name} does not exist (give a run folder or an .onnx file)")
        study = StudyFolder(name)
        if name.is_dir() and not RunFolder(name).exists() and study.exists():
            sources += [run.path for run in study.runs()]
        else:
            sources.append(name)
    return sources


def cmd_serve(args) -> int:
    if args.engine == "triton":
        return serve_triton(args)
    try:
        import uvicorn

        from fmnist.serve import create_app, load_models
        from fmnist.serve.processes import serve_processes
    except ImportError as e:
        raise FmnistError(
            f"fmnist serve needs the serve extra ({e.name} is missing): pip install 'fmnist[serve]'"
        ) from None
    settings = settings_from(args)
    backend = check_backend(args.backend)
    warn_if_public(args.host)
    sources = serve_sources(args.sources)
    loaded = load_models(sources, backend)  # loaded and warmed: a failure stops here
    check_address(args.host, args.port)  # before saying "serving": a port in use is the only line
    processes = f", {args.processes} processes" if args.processes > 1 else ""
    print(
        f"serving {', '.join(str(s) for s in sources)} on http://{args.host}:{args.port}/ "
        f"(API docs at /docs{processes}; Ctrl-C stops)",
        flush=True,
    )
    try:
        if args.processes > 1:
            serve_processes(loaded, settings, args.host, args.port)
        else:
            uvicorn.Server(
                uvicorn.Config(create_app(loaded, settings), host=args.host, port=args.port, **UVICORN)
            ).run()
    except SystemExit as e:  # uvicorn exits when it cannot bind the address
        raise FmnistError(f"cannot serve on {args.host}:{args.port} (in use, or not an address here)") from e
    return 0


def warn_if_public(host: str) -> None:
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: serving on {host}: the server has no authentication; anyone who reaches this address can use it",
            file=sys.stderr,
        )


def serve_triton(args) -> int:
    """The sources on the Triton server, in the foreground until Ctrl-C (exit 0) or until it stops
    by itself (its error as one line, exit 1)."""
    from fmnist.serve.triton import TritonServer, repository_of, server_home

    settings = settings_from(args)
    if args.processes != 1 or args.backend not in (None, "onnx"):
        raise UsageError(
            "--processes and --backend are fmnist's engine's: Triton runs ONNX Runtime in its own instances"
        )
    if args.port + 2 > 65535:
        raise UsageError(f"--port {args.port}: Triton takes it and the next two ports (gRPC, metrics)")
    server_home()  # no server, no export
    warn_if_public(args.host)
    sources = serve_sources(args.sources)
    for port in (args.port, args.port + 1, args.port + 2):
        check_address(args.host, port)
    delay_us = round(settings.max_delay * 1e6)
    with repository_of(sources, settings.max_batch, delay_us) as repository:
        server = TritonServer(repository, args.host, args.port, echo=sys.stderr)
        try:
            server.wait_ready()
            print(
                f"serving {', '.join(server.models)} on Triton {server.url} (HTTP; gRPC {args.host}:{args.port + 1}, "
                f"metrics {server.url.rsplit(':', 1)[0]}:{args.port + 2}/metrics; Ctrl-C stops)",
                flush=True,
            )
            code = server.proc.wait()
            if code:
                raise FmnistError(f"tritonserver stopped (exit {code}): {server.first_error()}")
        except KeyboardInterrupt:
            print("stopping Triton", file=sys.stderr, flush=True)
        finally:
            server.stop()
    return 0


def check_address(host: str, port: int) -> None:
    """Bind the address once, as uvicorn will (SO_REUSEADDR), to refuse one in use before anything
    is printed; the race with another program taking it meanwhile ends in the same error."""
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        raise FmnistError(f"cannot serve on {host}:{port} ({e.strerror or e})") from None


def settings_from(args) -> Settings:
    """The server's settings from its flags, or a UsageError saying which flag is out of range."""
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port must be 1-65535, got {args.port}")
    if (
        args.max_body_mb <= 0
        or args.max_images < 1
        or args.max_batch < 1
        or args.max_delay_ms < 0
        or args.processes < 1
        or args.max_queue < 1
        or args.max_models < 1
    ):
        raise UsageError(
            "--max-body-mb, --max-images, --max-batch, --max-queue, --max-models and --processes must be "
            "positive, --max-delay-ms not negative"
        )
    return Settings(
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        max_images=args.max_images,
        max_batch=args.max_batch,
        max_delay=args.max_delay_ms / 1000,
        processes=args.processes,
        max_queue=args.max_queue,
        max_models=args.max_models,
    )


def add_parsers(sub) -> None:
    p = sub.add_parser("serve", help="a JSON API and a page where you upload or draw a garment")
    p.add_argument(
        "sources",
        nargs="*",
        metavar="RUN_OR_ONNX",
        help="run folders, study folders (their runs) or .onnx files (default: the runs of the "
        "newest study under runs/); with --engine triton, runs, studies or one Triton model repository",
    )
    add_trust_flag(p)
    p.add_argument(
        "--engine",
        choices=("fmnist", "triton"),
        default="fmnist",
        help="fmnist (default: this JSON API and page) or triton: the runs exported to a Triton model "
        "repository (or a given one) on a real Triton server, HTTP on --port, gRPC and metrics on the next two",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        help=f"for run folders: torch, onnx or openvino (default {DEFAULT_BACKEND}, the faster one measured); "
        "for .onnx files: onnx (ONNX Runtime, default) or openvino",
    )
    add_limit_flags(p.add_argument_group("limits and scale"))
    p.set_defaults(func=cmd_serve)


def add_limit_flags(p) -> None:
    """What a request, a model's queue and the server may hold, and how many processes answer."""
    p.add_argument(
        "--max-body-mb",
        type=float,
        default=10.0,
        help="largest request body, refused with 413 before it is read (default 10)",
    )
    p.add_argument("--max-images", type=int, default=16, help="images in one /predict request (default 16)")
    p.add_argument(
        "--max-batch",
        type=int,
        default=Settings.max_batch,
        metavar="N",
        help="dynamic batching: concurrent requests' images a model answers at once "
        f"(default {Settings.max_batch}; 1 turns batching off)",
    )
    p.add_argument(
        "--max-delay-ms",
        type=float,
        default=Settings.max_delay * 1000,
        metavar="MS",
        help=f"how long a batch waits for more requests after its first (default {Settings.max_delay * 1000:g})",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=Settings.max_queue,
        metavar="N",
        help=f"requests waiting for one model; more are answered 503 with Retry-After (default {Settings.max_queue})",
    )
    p.add_argument(
        "--max-models",
        type=int,
        default=Settings.max_models,
        metavar="N",
        help=f"models served at once, the page's 'serve this run' included (default {Settings.max_models})",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=Settings.processes,
        metavar="N",
        help="server processes answering on the port, each with every model and its share of the cores "
        f"(default {Settings.processes}; more answer more requests on a machine of several cores, see BENCHMARKS.md)",
    )
