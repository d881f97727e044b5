"""Requests per second and p50/p99 latency of `fmnist serve`, per endpoint, for BENCHMARKS.md:
either of a running server, or of servers this script starts itself, one after the other on the
same machine, with dynamic batching off (--max-batch 1) and on (the default), in one server process
and in several (--processes), after `make study`:

    .venv/bin/python benchmarks/serve_load.py --serve runs/study --clients 64 --requests 3000 --wrk 10 --processes 1,2
    .venv/bin/python benchmarks/serve_load.py --url http://127.0.0.1:8000   # a server already running

Each endpoint is loaded on its own (so its figures are its own), with real test-set images: a PNG
to /predict (every served model answers), one image as an FP32 tensor to /v2/models/NAME/infer.
The Python client checks every answer, but on a 2-core machine it is itself the bottleneck; with
`--wrk SECONDS` the same requests are also made by wrk (Debian's package, a C load generator), which
measures what the server can do rather than what the client can send.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from fmnist.data import load_fashion_mnist
from fmnist.jobs.bench import machine
from fmnist.measure.load import Call, run_load


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", help="a running server (default: start them, see --serve)")
    parser.add_argument(
        "--serve",
        nargs="+",
        metavar="SOURCE",
        default=["runs/study"],
        help="what the started servers serve (default runs/study)",
    )
    parser.add_argument("--batching", default="off,on", help="the settings to start servers with (default off,on)")
    parser.add_argument("--processes", default="1", help="server processes to start servers with (default 1; e.g. 1,2)")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=3000, help="per endpoint")
    parser.add_argument("--model", help="the model /infer is sent to (default: the first served)")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--wrk", type=int, metavar="SECONDS", help="also load each endpoint with wrk this long")
    args = parser.parse_args()
    data = load_fashion_mnist(download=False, progress=False)
    if args.url:
        settings = {"running server": measure(args.url, args, data)}
    else:
        settings = {}
        for processes in args.processes.split(","):
            for batching in args.batching.split(","):
                flags = ["--max-batch", "1"] if batching == "off" else []
                label = f"batching {batching}" + (f", {processes} processes" if processes != "1" else "")
                with started(args.serve, [*flags, "--processes", processes]) as url:
                    print(f"{label}:", flush=True)
                    settings[label] = measure(url, args, data)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"clients": args.clients, "machine": machine(), "settings": settings}, f, indent=1)


@contextlib.contextmanager
def started(sources: list[str], flags: list[str]):
    """`fmnist serve SOURCES FLAGS` on a free local port, until the block ends."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "fmnist", "serve", *sources, "--port", str(port), *flags])
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if proc.poll() is not None:
                raise SystemExit(f"fmnist serve stopped with {proc.returncode}")
            try:
                if httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        if "--processes" in flags and flags[flags.index("--processes") + 1] != "1":
            time.sleep(20)  # ready means one worker is; the others start alongside it
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def measure(url: str, args, data) -> dict:
    """Each endpoint loaded on its own, by the Python client and (with --wrk) by wrk."""
    models = httpx.get(url + "/models").json()["models"]
    model = args.model or models[0]["name"]
    pngs = []
    for i in range(50):
        buf = io.BytesIO()
        Image.fromarray((data.test_images[i, 0].numpy() * 255).round().astype(np.uint8)).save(buf, "PNG")
        pngs.append(buf.getvalue())
    tensors = [data.test_images[i].reshape(-1).tolist() for i in range(50)]
    phases = {
        f"POST /predict (1 image, {len(models)} models)": [
            Call("predict", "POST", "/predict?top_k=3", files={"file": ("x.png", pngs[k % 50], "image/png")})
            for k in range(args.requests)
        ],
        f"POST /v2/models/{model}/infer (1 image)": [
            Call(
                "infer",
                "POST",
                f"/v2/models/{model}/infer",
                json_body={
                    "inputs": [{"name": "images", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": tensors[k % 50]}]
                },
            )
            for k in range(args.requests)
        ],
        "GET /v2/health/ready": [Call("ready", "GET", "/v2/health/ready") for _ in range(args.requests)],
    }
    results = {}
    for name, calls in phases.items() if args.requests else ():
        report = asyncio.run(run_load(url, calls, clients=args.clients, time_limit=600))
        (kind,) = report["kinds"].values()
        results[name] = {
            "requests": report["made"],
            "failed": report["failed"],
            "requests_per_second": report["requests_per_second"],
            "p50_ms": kind["p50_ms"],
            "p99_ms": kind["p99_ms"],
            "statuses": kind["statuses"],
        }
        r = results[name]
        print(
            f"{name}: {r['requests']} requests, {r['failed']} failed, {r['requests_per_second']:.0f} req/s, "
            f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms",
            flush=True,
        )
    if args.wrk:
        boundary = "fmnistboundary"
        bodies = {
            "POST /predict": (
                "/predict?top_k=3",
                f"multipart/form-data; boundary={boundary}",
                (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
                    "Content-Type: image/png\r\n\r\n"
                ).encode()
                + pngs[0]
                + f"\r\n--{boundary}--\r\n".encode(),
            ),
            f"POST /v2/models/{model}/infer": (
                f"/v2/models/{model}/infer",
                "application/json",
                json.dumps(
                    {"inputs": [{"name": "images", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": tensors[0]}]}
                ).encode(),
            ),
            "GET /v2/health/ready": ("/v2/health/ready", None, None),
        }
        for name, (path, kind, body) in bodies.items():
            results[f"wrk {name}"] = run_wrk(url + path, kind, body, args.clients, args.wrk)
            r = results[f"wrk {name}"]
            print(
                f"wrk {name}: {r['requests_per_second']:.0f} req/s, p50 {r['p50_ms']:.1f} ms, "
                f"p99 {r['p99_ms']:.1f} ms, non-2xx {r['non_2xx']}",
                flush=True,
            )
    return {"models": [m["name"] for m in models], "endpoints": results}


def run_wrk(url: str, content_type: str | None, body: bytes | None, clients: int, seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "request.lua"
        lines = []
        if body is not None:
            (Path(tmp) / "body").write_bytes(body)
            lines = [
                'wrk.method = "POST"',
                f'wrk.headers["Content-Type"] = "{content_type}"',
                f'local f = io.open("{Path(tmp) / "body"}", "rb")',
                'wrk.body = f:read("*a")',
                "f:close()",
            ]
        script.write_text("\n".join(lines) + "\n")
        out = subprocess.run(
            ["wrk", "-t1", f"-c{clients}", f"-d{int(seconds)}s", "--latency", "-s", str(script), url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def ms(label: str) -> float:
        value, unit = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests_per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": ms("50"),
        "p99_ms": ms("99"),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
    }


if __name__ == "__main__":
    main()
