"""Distributed training under torchrun, world size 2 on the CPU (gloo): the same weights as one
process, BatchNorm statistics averaged, one process writing, interrupt and resume with another
number of processes, a restart after a killed process, and no hang when a process dies."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import cli, free_port, train_args, untimed, write_dataset

from fmnist import files
from fmnist.run.checkpoint import load_checkpoint
from fmnist.training import distributed

TIMEOUT = 240  # no test here may hang: every launch is bounded


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist-data")
    write_dataset(root, train_per_class=40, test_per_class=5)  # 360 training images: 12 steps of 30
    return root


def torchrun(*args, nproc=2, extra=()):
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(nproc),
        *extra,
        "-m",
        "fmnist",
        *map(str, args),
    ]


def run(argv, timeout=TIMEOUT):
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


# Batches of 31 of 360 images: two processes take shares of 16 and 15 (the last batch 10 and 9), so
# the mean of their means is not the batch's mean: the shares' losses must be weighted.
SGD = ["shallow", "--optimizer", "sgd", "--lr", "0.05", "--batch-size", "31", "--epochs", "3"]


def test_two_processes_give_the_weights_of_one(data_dir, tmp_path, capsys):
    assert cli(capsys, *train_args(data_dir, tmp_path / "one", *SGD))[0] == 0
    code, out, err = run(torchrun(*train_args(data_dir, tmp_path / "two", *SGD)))
    assert code == 0, out + err
    one = load_checkpoint(tmp_path / "one" / "last.pt")
    two = load_checkpoint(tmp_path / "two" / "last.pt")
    for k in one["model"]:
        assert torch.allclose(one["model"][k], two["model"][k], atol=1e-5), k
    a, b = (
        untimed(files.read_csv(tmp_path / "one" / "history.csv")),
        untimed(files.read_csv(tmp_path / "two" / "history.csv")),
    )
    assert [r["epoch"] for r in b] == [1, 2, 3]
    for r1, r2 in zip(a, b):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert r1[key] == pytest.approx(r2[key], abs=1e-5), key
    m1, m2 = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("one", "two"))
    assert m2["n_test"] == m1["n_test"] == 50 and m2["test_accuracy"] == m1["test_accuracy"]
    # One process writes and reports: one line per epoch and one result line, not two.
    assert out.count("shallow epoch 1/3") <= 1 and out.count("test accuracy") == 1


def test_sync_batchnorm_is_refused_on_cpus(data_dir, tmp_path):
    code, _, err = run(torchrun(*train_args(data_dir, tmp_path / "s", "deeper_cnn", "--sync-batchnorm")))
    assert code != 0 and "--sync-batchnorm needs CUDA" in err
    assert not (tmp_path / "s").exists()


def _bn_worker(rank, port, out):
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE="2",
    )
    distributed.cores = lambda: 6  # a machine of six cores, whatever this one has
    dist, device = distributed.init("cpu")
    threads = torch.get_num_threads()
    bn = torch.nn.BatchNorm1d(3)
    bn(torch.randn(16, 3) + 10 * rank)  # each process: statistics of its own share
    before = bn.running_mean.clone()
    dist.average_buffers(bn)
    torch.save({"threads": threads, "before": before, "after": bn.running_mean.clone()}, out / f"{rank}.pt")
    distributed.shutdown()


def test_batchnorm_statistics_are_averaged_over_processes_and_cores_shared(tmp_path):
    mp.spawn(_bn_worker, args=(free_port(), tmp_path), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    assert not torch.allclose(r0["before"], r1["before"])  # per-process batch statistics while training
    assert torch.allclose(r0["after"], (r0["before"] + r1["before"]) / 2) and torch.equal(r0["after"], r1["after"])
    assert r0["threads"] == r1["threads"] == 3  # each of the two processes: half the cores


def wait_for_epochs(run_dir, n, proc, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        history = run_dir / "history.csv"
        if history.is_file() and len(history.read_text().splitlines()) > n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("no epoch finished in time")


def workers(proc):
    """The training processes torchrun started: its children, read from /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == proc.pid:  # the parent's pid
            children.append(int(stat.parent.name))
    assert children, "torchrun has no worker processes"
    return sorted(children)


def test_sigterm_stops_every_process_at_one_step_and_a_resume_with_one_process_finishes(data_dir, tmp_path, capsys):
    write_dataset(tmp_path / "big", train_per_class=600)  # epochs long enough to be caught mid-way
    args = train_args(tmp_path / "big", tmp_path / "run", *SGD)
    proc = subprocess.Popen(torchrun(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_epochs(tmp_path / "run", 1, proc)
    os.kill(workers(proc)[-1], signal.SIGTERM)  # one process is told: all stop, at one step
    _, err = proc.communicate(timeout=TIMEOUT)
    saved = load_checkpoint(tmp_path / "run" / "last.pt")
    assert "partial" in saved and saved["epoch"] == 2, err  # mid-epoch, the same step for both
    assert err.count(f"saved at step {saved['partial']['step']} of epoch 2") == 1  # by the first process
    assert err.count("interrupted during epoch 2") == 2  # both stopped there
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]  # written once, whole
    code, out, err = cli(capsys, "resume", tmp_path / "run", "--quiet")  # one process now, same global batch
    assert code == 0, out + err
    assert [r["epoch"] for r in files.read_csv(tmp_path / "run" / "history.csv")] == [1, 2, 3]
    assert cli(capsys, *train_args(tmp_path / "big", tmp_path / "whole", *SGD))[0] == 0
    a = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "whole" / "last.pt")["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


def test_a_killed_process_is_restarted_and_the_run_completes_with_every_epoch_once(data_dir, tmp_path):
    write_dataset(tmp_path / "big", train_per_class=600)
    args = train_args(tmp_path / "big", tmp_path / "run", *SGD[:-1], "4")
    proc = subprocess.Popen(
        torchrun(*args, extra=("--max-restarts", "1")), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for_epochs(tmp_path / "run", 1, proc)
    os.kill(workers(proc)[-1], signal.SIGKILL)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err[-3000:]
    history = files.read_csv(tmp_path / "run" / "history.csv")
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["best_epoch"] in (1, 2, 3, 4)


def test_a_dead_process_makes_the_run_fail_fast_not_hang(data_dir, tmp_path):
    write_dataset(tmp_path / "big", train_per_class=600)
    args = train_args(tmp_path / "big", tmp_path / "run", *SGD[:-1], "20")
    proc = subprocess.Popen(torchrun(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_epochs(tmp_path / "run", 1, proc)
    os.kill(workers(proc)[-1], signal.SIGKILL)
    start = time.time()
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode != 0 and time.time() - start < 90
    assert "rank: 1" in err or "local_rank: 1" in err  # torchrun names the process that failed
