"""`fmnist serve --processes N`: N server processes answering on one port, for a machine whose cores
one Python process cannot keep busy (the event loop, the parsing and the responses all hold the
interpreter). uvicorn's supervisor starts them, hands them the listening socket (the kernel gives
each connection to one of them) and restarts one that dies.

The command's own process loads and warms every model first, so a bad source still stops it before
any port opens; it then writes what the workers need to a temporary folder (the settings, each model
by name with its source, temperature and, for ONNX Runtime, the exported graph, so no worker exports
again) and only supervises. Each worker builds its app from that folder (`app`, uvicorn's factory)
with its share of the cores for its models. Prometheus metrics live in that folder too, summed over
the workers by /metrics. Each worker batches its own requests; serving another run from the page
needs a single process (409 otherwise: the workers would disagree on what is served).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

from prometheus_client import multiprocess
from uvicorn.supervisors import Multiprocess

from fmnist.device import cores
from fmnist.files import read_json, write_json
from fmnist.inference.predictor import Predictor, load_predictor, model_predictor, runtime_predictor
from fmnist.serve.settings import METRICS_ENV, UVICORN, Settings

SPEC_ENV = "FMNIST_SERVE_SPEC"  # the folder a worker builds its app from


def write_spec(folder: Path, loaded: dict[str, Predictor], settings: Settings) -> None:
    """The served models and the settings, as the workers read them (see `app`)."""
    models = []
    for i, (name, p) in enumerate(loaded.items()):
        entry = {"name": name, "source": p.source, "backend": p.backend, "info": p.info, "temperature": p.temperature}
        if p.proto is not None:
            entry["onnx"] = f"model-{i}.onnx"
            (folder / entry["onnx"]).write_bytes(p.proto.SerializeToString())
        elif p.module is not None:  # the weights the command loaded and checked, not best.pt again
            import torch

            entry["torch"] = f"model-{i}.pt"
            state = {"model": p.module.state_dict(), "config": dataclasses.asdict(p.config)}
            torch.save(state, folder / entry["torch"])
        models.append(entry)
    write_json(folder / "spec.json", {"settings": dataclasses.asdict(settings), "models": models})


def read_spec(folder: Path) -> tuple[dict[str, Predictor], Settings]:
    """The models (warmed up, each with this worker's share of the cores) and settings `write_spec` wrote."""
    import onnx
    import torch

    from fmnist.serve.models import warmed

    spec = read_json(folder / "spec.json")
    fields = spec["settings"]
    settings = Settings(**{**fields, "runs_roots": tuple(fields["runs_roots"])})
    threads = max(1, cores() // settings.processes)
    torch.set_num_threads(threads)
    loaded = {}
    for m in spec["models"]:
        if "onnx" in m:
            proto = onnx.load_from_string((folder / m["onnx"]).read_bytes())
            p = runtime_predictor(proto, m["backend"], m["name"], m["source"], m["info"], threads)
        elif "torch" in m:
            p = torch_predictor(folder / m["torch"], m["name"], m["source"], m["info"])
        else:
            p = load_predictor(m["source"], m["backend"])
            p.name = m["name"]
        p.temperature = m["temperature"]
        loaded[m["name"]] = warmed(p)
    return loaded, settings


def torch_predictor(path: Path, name: str, source: str, info: dict) -> Predictor:
    """A PyTorch predictor of the weights and config the command's process wrote to `path`."""
    import torch

    from fmnist.models.forward import prepare
    from fmnist.models.network import create_network
    from fmnist.training.config import make_config

    state = torch.load(path, map_location="cpu", weights_only=True)
    cfg = make_config(state["config"])
    model = create_network(cfg)
    model.load_state_dict(state["model"])
    return model_predictor(prepare(model, torch.device("cpu")).eval(), cfg, "torch", name, source, info)


def app():
    """A worker's app (uvicorn calls this in each process it starts)."""
    from fmnist.serve.app import create_app

    loaded, settings = read_spec(Path(os.environ[SPEC_ENV]))
    return create_app(loaded, settings)


class Supervisor(Multiprocess):
    """uvicorn's supervisor, which also forgets a dead worker's gauges (its requests in flight
    would stay in /metrics' sum for ever); its counters stay: those requests were answered."""

    def keep_subprocess_alive(self) -> None:
        before = {p.pid for p in self.processes}
        super().keep_subprocess_alive()
        for pid in before - {p.pid for p in self.processes}:
            multiprocess.mark_process_dead(pid, os.environ[METRICS_ENV])


def serve_processes(loaded: dict[str, Predictor], settings: Settings, host: str, port: int) -> None:
    """Serve `loaded` from settings.processes worker processes until interrupted."""
    import uvicorn

    with tempfile.TemporaryDirectory(prefix="fmnist-serve-") as tmp:
        folder = Path(tmp)
        write_spec(folder, loaded, settings)
        (folder / "metrics").mkdir()
        os.environ[SPEC_ENV], os.environ[METRICS_ENV] = str(folder), str(folder / "metrics")
        config = uvicorn.Config(
            f"{__name__}:app", factory=True, host=host, port=port, workers=settings.processes, **UVICORN
        )
        sock = config.bind_socket()
        try:
            Supervisor(config, sockets=[sock]).run()
        finally:
            sock.close()
