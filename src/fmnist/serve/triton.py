"""`fmnist serve --engine triton`: runs, studies or a model repository on a real Triton server.

The server is the `tritonserver` of the nvidia-pytriton wheel (found where `make triton` puts it, in
FMNIST_TRITON_HOME, or on PATH as in Triton's container), which has only Triton's Python backend.
What is not yet a repository is exported into a temporary one (Python backend). The backend starts
a stub, an embedded CPython, per model instance: it finds this very interpreter first on PATH (so its
`sys.prefix` is fmnist's environment, with NumPy and ONNX Runtime) and this interpreter's libpython
on LD_LIBRARY_PATH; PYTHONPATH it does not pass on. HTTP on --port, gRPC and metrics on the next
two, ready only once every model is loaded; a model that fails to load stops the server with its
error as the one line.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fmnist.errors import FmnistError

START_SECONDS = 180  # every model loaded by then, or the start has failed
# Lines of Triton's log that say nothing to a CPU-only user: it looks for GPUs at every start.
_HARMLESS = ("CUDA", "cuda", "Cuda", "NVML", "nvml", "DCGM", "pinned memory", "GPU")


def server_home() -> Path:
    """The folder holding bin/tritonserver, backends/ and python_backend_stubs/, or a one-line error."""
    candidates = []
    if os.environ.get("FMNIST_TRITON_HOME"):
        candidates.append(Path(os.environ["FMNIST_TRITON_HOME"]))
    candidates.append(Path(sys.prefix) / "triton" / "pytriton" / "tritonserver")  # `make triton`
    try:
        import pytriton  # the wheel installed in this environment after all

        candidates.append(Path(pytriton.__file__).parent / "tritonserver")
    except ImportError:
        pass
    on_path = shutil.which("tritonserver")
    if on_path:
        candidates.append(Path(on_path).resolve().parents[1])  # /opt/tritonserver/bin/tritonserver
    for home in candidates:
        if (home / "bin" / "tritonserver").is_file():
            return home
    raise FmnistError(
        "no Triton server found: run 'make triton' (the nvidia-pytriton wheel's tritonserver, "
        "installed under .venv/triton), or set FMNIST_TRITON_HOME to the folder holding bin/tritonserver"
    )


def backend_folder(home: Path, into: Path) -> Path:
    """A backends folder whose python/ holds the backend and the stub for this Python version (the
    wheel keeps its stubs apart, one per version)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    backend = home / "backends" / "python"
    stub = home / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not (backend / "libtriton_python.so").is_file():
        raise FmnistError(f"{home} has no Python backend (backends/python/libtriton_python.so)")
    if not stub.is_file() and (backend / "triton_python_backend_stub").is_file():
        stub = backend / "triton_python_backend_stub"  # Triton's container: the stub in the backend
    if not stub.is_file():
        raise FmnistError(f"{home} has no Python backend stub for Python {version}")
    python = into / "python"
    python.mkdir(parents=True)
    for item in backend.iterdir():
        (python / item.name).symlink_to(item)
    if not (python / stub.name).exists():
        (python / stub.name).symlink_to(stub)
    return into


def stub_environment() -> dict[str, str]:
    """The environment under which the Python backend's stub embeds this interpreter."""
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise FmnistError(
            f"this Python ({sys.executable}) was built without a shared libpython, which Triton's "
            "Python backend embeds: use a Python built with --enable-shared"
        )
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
    env.pop("PYTHONHOME", None)
    return env


def command(home: Path, repository: Path, backends: Path, host: str, port: int) -> list[str]:
    return [
        str(home / "bin" / "tritonserver"),
        f"--model-repository={repository}",
        f"--backend-directory={backends}",
        f"--http-address={host}",
        f"--http-port={port}",
        f"--grpc-address={host}",
        f"--grpc-port={port + 1}",
        f"--metrics-address={host}",
        f"--metrics-port={port + 2}",
        "--allow-gpu-metrics=false",
        "--disable-auto-complete-config",  # the configs are complete: no stub started to guess them
        "--strict-readiness=true",
        "--exit-on-error=true",
        "--exit-timeout-secs=5",
        "--log-info=false",
    ]


def models_of(repository: Path) -> list[str]:
    return sorted(p.name for p in repository.iterdir() if p.is_dir() and not p.name.startswith("."))


@contextmanager
def repository_of(sources: list[Path], max_batch: int, queue_delay_us: int) -> Iterator[Path]:
    """The repository to serve: a given one as it is, or the runs exported into a temporary one."""
    from fmnist.inference.triton_repo import is_repository, write_repository

    if len(sources) == 1 and is_repository(sources[0]):
        yield sources[0].resolve()
        return
    if any(is_repository(s) for s in sources):
        raise FmnistError("serve one Triton repository alone, or run folders and studies, not both")
    with tempfile.TemporaryDirectory(prefix="fmnist-triton-") as tmp:
        repository = Path(tmp) / "models"
        write_repository(sources, repository, "python", max_batch=max_batch, queue_delay_us=queue_delay_us)
        yield repository


class TritonServer:
    """A running `tritonserver` on `host`: HTTP on `port`, gRPC on port + 1, metrics on port + 2."""

    def __init__(self, repository: Path, host: str, port: int, echo=None):
        self.repository, self.host, self.port = repository, host, port
        self.models = models_of(repository)
        self.home = server_home()
        self._tmp = tempfile.TemporaryDirectory(prefix="fmnist-triton-backends-")
        backends = backend_folder(self.home, Path(self._tmp.name))
        self.log: list[str] = []
        self.echo = echo  # where the server's lines go once it is ready (None: kept only)
        self.ready = False
        self.proc = subprocess.Popen(
            command(self.home, repository, backends, host, port),
            env=stub_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,  # Ctrl-C reaches fmnist, which stops the server in order
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def url(self) -> str:
        return f"http://{'127.0.0.1' if self.host in ('0.0.0.0', '::') else self.host}:{self.port}"

    def _read(self) -> None:
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.log.append(line)
            if self.ready and self.echo is not None and not any(w in line for w in _HARMLESS):
                print(line, file=self.echo, flush=True)

    def wait_ready(self, seconds: float = START_SECONDS) -> None:
        """Until the server says it is ready (every model loaded), or a one-line error: the first
        error it logged, where it stopped."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._reader.join(5)
                raise FmnistError(f"tritonserver stopped: {self.first_error()}")
            try:
                with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        self.ready = True
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise FmnistError(f"tritonserver did not become ready within {seconds:.0f} s: {self.first_error()}")

    def first_error(self) -> str:
        """The line that says why the server stopped: a model's load error, else its last error."""
        for line in self.log:
            if "failed to load" in line:
                return _message(line)
        errors = [line for line in self.log if line.startswith("E") and not any(w in line for w in _HARMLESS)]
        if errors:
            return _message(errors[-1])
        return _message(self.log[-1]) if self.log else "it printed nothing"

    def stop(self) -> int:
        """Stop the server as Ctrl-C would (SIGINT: in-flight requests finish), killing it if it hangs,
        then whatever of its process group is left (its backend stubs); a second Ctrl-C meanwhile
        does not leave them running."""
        while True:
            try:
                if self.proc.poll() is None:
                    self.proc.send_signal(signal.SIGINT)
                    try:
                        self.proc.wait(15)
                    except subprocess.TimeoutExpired:
                        self.proc.kill()
                        self.proc.wait()
                break
            except KeyboardInterrupt:
                self.proc.kill()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._reader.join(5)
        self._tmp.cleanup()
        return self.proc.returncode


def _message(line: str) -> str:
    """A log line without Triton's prefix (level, time, thread, file:line), its escaped newlines cut."""
    text = line.split('] "', 1)[1].rstrip('"') if '] "' in line else line.split("] ", 1)[-1]
    return text.split("\\n")[0].strip()
