"""Fixtures: tiny synthetic Fashion-MNIST folders (real IDX format, learnable classes) and an
isolated user cache, so no test touches the real cache or the network."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fmnist.data import dataset as data
from fmnist.data.idx import encode_idx
from fmnist.models import registry


def pytest_configure(config) -> None:
    """Under pytest-xdist, each worker (and every process it starts) keeps to its own share of the
    cores: two workers whose PyTorch and ONNX Runtime each spread over every core wait on each other's
    threads, and the tests that train in several processes ran two to three times slower so."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    cores = sorted(os.sched_getaffinity(0))
    if worker is None or count < 2 or len(cores) < count:
        return
    share = set(cores[int(worker.removeprefix("gw")) :: count])
    os.sched_setaffinity(0, share)
    torch.set_num_threads(len(share))  # PyTorch counted the cores when conftest imported it


# The modules that take longest, longest first (measured: `pytest --durations=0`, summed by file).
# Under `--dist loadscope` (make test) each module runs whole on one test process, and the processes
# take modules in collection order: the long ones first leave the short ones to even out the end.
LONGEST_FIRST = (
    "test_distributed",
    "test_sweep",
    "test_seams",
    "test_export",
    "test_notebooks",
    "test_realdata",
    "test_networks",
    "test_reliability",
    "test_serve_scale",
    "test_trust",
    "test_recipes",
    "test_page",
    "test_understand",
    "test_formats",
    "test_triton",
    "test_serve",
    "test_track",
    "test_cli",
    "test_ensemble",
    "test_audit",
    "test_api",
    "test_serve_concurrency",
    "test_docs",
)


def pytest_collection_modifyitems(session, config, items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rsplit(".", 1)[-1], len(rank)))


def make_split(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is written as a bright bar at a class-dependent row, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_class).astype(np.uint8)
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(len(labels), 28, 28), dtype=np.uint8)
    for i, c in enumerate(labels):
        images[i, 2 + 2 * c : 4 + 2 * c, 4:24] = 255
    return images, labels


def write_dataset(
    directory: Path, train_per_class: int = 20, test_per_class: int = 5, gz: bool = True
) -> dict[str, str]:
    """Write the four files; return the SHA-256 of each file's decompressed content."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = dict(zip(("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), make_split(train_per_class, 1)))
    arrays.update(zip(("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"), make_split(test_per_class, 2)))
    sums = {}
    for name, array in arrays.items():
        raw = encode_idx(array)
        sums[name] = hashlib.sha256(raw).hexdigest()
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (directory / name).write_bytes(raw)
    return sums


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("FMNIST_DATA_DIR", raising=False)
    monkeypatch.setenv("FMNIST_MIRRORS", "http://127.0.0.1:9/")  # never the real mirrors in tests
    return cache / "fmnist"


@pytest.fixture(autouse=True)
def untrusted(monkeypatch):
    """No test trusts network code unless it says so: neither by the environment nor by a class
    an earlier test of the same process named (the process's trusted digests are emptied)."""
    from fmnist.models import code

    monkeypatch.delenv(code.TRUST_ENV, raising=False)
    monkeypatch.setattr(code, "TRUSTED", set())
    monkeypatch.setattr(code, "LIVE", {})


@pytest.fixture
def synth_dir(tmp_path) -> Path:
    write_dataset(tmp_path / "synth")
    return tmp_path / "synth"


@pytest.fixture
def synth_verified(tmp_path, monkeypatch) -> Path:
    """A synthetic folder whose checksums are the expected ones (data.SHA256 patched)."""
    sums = write_dataset(tmp_path / "synth-ok")
    monkeypatch.setattr(data, "SHA256", sums)
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "no-debian")
    return tmp_path / "synth-ok"


def train_args(data_dir, out, *extra) -> list:
    """`fmnist train` on synthetic data, quietly, on the CPU."""
    return ["train", "--data-dir", data_dir, "--no-verify", "--out", out, "--quiet", "--device", "cpu", *extra]


def untimed(history: list[dict]) -> list[dict]:
    """History rows without their timing columns, which differ from run to run."""
    return [{k: v for k, v in row.items() if k not in ("seconds", "elapsed", "compile_seconds")} for row in history]


NO_VERIFY_WARNING = "warning: --no-verify: "


def cli(capsys, *argv, raw: bool = False) -> tuple[int, str, str]:
    """Run the fmnist command in-process; its exit code, stdout and stderr. The synthetic data of
    these tests fails its checksums, so `--no-verify` warns of it on every load: that warning line
    is dropped from stderr unless `raw` (test_seams checks it is there)."""
    from fmnist.cli.main import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    if not raw:
        err = "".join(line for line in err.splitlines(keepends=True) if not line.startswith(NO_VERIFY_WARNING))
    return code, out, err


def without_warning(err: str) -> str:
    """A subprocess's stderr without the --no-verify warning (see cli)."""
    return "".join(line for line in err.splitlines(keepends=True) if not line.startswith(NO_VERIFY_WARNING))


class NanAfter(nn.Module):
    """Learns normally for `steps` training steps, then returns NaN logits."""

    def __init__(self, steps: int):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
        self.steps, self.calls = steps, 0

    def forward(self, x):
        out = self.net(x)
        if self.training:
            self.calls += 1
            if self.calls > self.steps:
                return out * float("nan")
        return out


@pytest.fixture
def register(monkeypatch):
    """Register models for one test only: `register(fn)` adds `fn` under its name."""
    monkeypatch.setattr(registry, "_BUILDERS", dict(registry._BUILDERS))
    return registry.register_model


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two run folders (shallow, simple_cnn) trained for an epoch on synthetic data and exported,
    for the server's tests."""
    from fmnist.cli.main import main

    root = tmp_path_factory.mktemp("served")
    write_dataset(root / "data", train_per_class=20)
    for name in ("shallow", "simple_cnn"):
        assert main([str(a) for a in train_args(root / "data", root / name, name, "--epochs", "1")]) == 0
        # Exported once, as a user deploying a run would: every server started on these runs loads
        # the checked file instead of exporting the graph again (tests/test_export.py tests that).
        assert main(["export", str(root / name)]) == 0
    return root


@pytest.fixture(scope="session")
def deployable(tmp_path_factory, worker_id):
    """A study model (simple_cnn) and a run with test-time views (flip and shift), trained for two
    epochs on synthetic data and exported, for the deployment formats' tests: made once for all
    test processes (the first to ask makes it, under a lock; the others read it)."""
    from filelock import FileLock

    from fmnist.cli.main import main

    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    root = shared / "deployable"
    with FileLock(str(shared / "deployable.lock")):
        if not (root / "done").is_file():
            write_dataset(root / "data", train_per_class=50)
            plain = train_args(root / "data", root / "simple_cnn", "simple_cnn", "--epochs", "2")
            views = train_args(root / "data", root / "views", "shallow", "--epochs", "2", "--tta", "--tta-shift", "1")
            for argv in (plain, views):
                assert main([str(a) for a in argv]) == 0
            for name in ("simple_cnn", "views"):  # exported once: the runtimes load the run's model.onnx
                assert main(["export", str(root / name)]) == 0
            (root / "done").touch()
    return root


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(*args, cwd=None, seconds: float = 90):
    """`fmnist serve ARGS` in its own process on a free local port, once it is ready: (base URL, process)."""
    import subprocess
    import sys
    import time

    import httpx

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fmnist", "serve", *map(str, args), "--port", str(port)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if httpx.get(base + "/v2/health/ready", timeout=1).status_code == 200:
                return base, proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise AssertionError(f"fmnist serve stopped: {proc.stdout.read()}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("fmnist serve never became ready")


@pytest.fixture(scope="session")
def postgres_url():
    """A throw-away PostgreSQL cluster from Debian's package, on a free port of 127.0.0.1, removed
    afterwards. PostgreSQL refuses to run as root, so as root it runs as `nobody`. Fails, not
    skips, without the package: .ci/run installs it."""
    import glob
    import os
    import shutil
    import subprocess
    import tempfile

    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    assert bins, "PostgreSQL is not installed: apt-get install postgresql (.ci/run does)"
    bindir = os.path.dirname(bins[-1])
    root = tempfile.mkdtemp(prefix="fmnist-pg-")  # under /tmp, reachable by `nobody`
    as_user = []
    if os.geteuid() == 0:
        shutil.chown(root, "nobody")
        os.chmod(root, 0o700)
        as_user = ["runuser", "-u", "nobody", "--"]
    data, port = os.path.join(root, "data"), free_port()
    env = {**os.environ, "LC_ALL": "C"}
    subprocess.run(
        [
            *as_user,
            f"{bindir}/initdb",
            "-D",
            data,
            "-A",
            "trust",
            "-U",
            "fmnist",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ],  # UTF-8: under SQL_ASCII the driver returns bytes
        check=True,
        capture_output=True,
        env=env,
    )
    subprocess.run(
        [
            *as_user,
            f"{bindir}/pg_ctl",
            "-D",
            data,
            "-l",
            os.path.join(root, "log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -F",
            "start",
        ],
        check=True,
        capture_output=True,
        env=env,
    )
    try:
        yield f"postgresql://fmnist@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
