"""A sweep worker: takes trials from the study until it holds `trials` of them, trains each as an
ordinary run folder, and reports validation accuracy after every epoch so the pruner can stop a
poor trial early. Any number of workers, on one machine or many, share a study.

A worker that dies mid-trial (SIGKILL, a lost machine) cannot say so; every worker therefore
writes a heartbeat on its running trial every few seconds, and any worker that finds a running
trial whose heartbeat is older than `STALE_BEATS` beats marks it failed and queues its parameters
again, so they are tried by the next worker to start a trial.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from fmnist import stops
from fmnist.data import FashionMNIST
from fmnist.errors import FmnistError
from fmnist.jobs.train import fit_run, start_run
from fmnist.run.folder import RunFolder, load_data
from fmnist.run.tracking import track_trial
from fmnist.stops import Diverged, Interrupted, Pruned
from fmnist.sweep.space import Space
from fmnist.sweep.storage import study_lock

STALE_BEATS = 4  # heartbeats missed before a running trial counts as dead


@dataclasses.dataclass
class Sweep:
    """What a worker needs: the study, its space and folder, and where trials run."""

    study: Any  # optuna.Study
    space: Space
    folder: Path
    trials: int
    storage_url: str | None = None
    heartbeat: float = 10.0  # seconds between a running trial's heartbeats
    where: dict = dataclasses.field(default_factory=dict)  # device, data_dir, verify
    quiet: bool = False
    sampler: Callable[[int], Any] | None = None  # the sampler of the next proposal, by trial count


def trial_dir(folder: Path, number: int) -> Path:
    return folder / f"trial-{number:04d}"


def fail_stale(sweep: Sweep) -> list[int]:
    """Mark failed every running trial whose heartbeat stopped, and queue its parameters again
    (call under the study lock, so two workers never retry the same trial)."""
    import optuna
    from optuna.trial import TrialState

    now, retried = time.time(), []
    for t in sweep.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = t.user_attrs.get("heartbeat", t.datetime_start.timestamp() if t.datetime_start else now)
        if now - beat <= STALE_BEATS * sweep.heartbeat:
            continue
        storage = sweep.study._storage
        try:  # the reason first: a finished trial takes no more attributes
            storage.set_trial_user_attr(t._trial_id, "failed", f"no heartbeat for {now - beat:.0f} s: its worker died")
            if not storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
                continue
        except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # it finished meanwhile
        sweep.study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        folder = RunFolder(trial_dir(sweep.folder, t.number))
        if folder.path.is_dir():  # on this machine: the folder says so too
            folder.mark("failed", {"reason": "its worker stopped beating", "retried": True})
        retried.append(t.number)
    return retried


def next_trial(sweep: Sweep):
    """The next trial to run: a queued retry first, else a new one while the study holds fewer than
    `trials` (failures aside). None once it is full and no other worker's trial is still running:
    while one is, this worker waits, so that it can retry that trial if its worker dies."""
    from optuna.trial import TrialState

    while not stops.STOP.set:
        with study_lock(sweep.storage_url, sweep.folder, sweep.study.study_name):
            fail_stale(sweep)
            trials = sweep.study.get_trials(deepcopy=False)
            held = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING) for t in trials)
            waiting = any(t.state == TrialState.WAITING for t in trials)
            if waiting or held < sweep.trials:
                if sweep.sampler is not None:
                    sweep.study.sampler = sweep.sampler(len(trials))
                trial = sweep.study.ask(sweep.space.distributions())
                sweep.study._storage.set_trial_user_attr(trial._trial_id, "heartbeat", time.time())
                return trial
            if not any(t.state == TrialState.RUNNING for t in trials):
                return None
        time.sleep(sweep.heartbeat)
    return None


class Heartbeat:
    """Beats on the running trial, and looks for dead workers' trials, from a thread."""

    def __init__(self, sweep: Sweep):
        self.sweep, self.trial_id = sweep, None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="fmnist-sweep-heartbeat", daemon=True)

    def run(self) -> None:
        import optuna

        while not self.stop.wait(self.sweep.heartbeat):
            try:
                trial_id = self.trial_id
                if trial_id is not None:
                    try:
                        self.sweep.study._storage.set_trial_user_attr(trial_id, "heartbeat", time.time())
                    except optuna.exceptions.UpdateFinishedTrialError:
                        pass  # it ended between the check and the beat
                with study_lock(self.sweep.storage_url, self.sweep.folder, self.sweep.study.study_name):
                    fail_stale(self.sweep)
            except Exception as e:  # a storage hiccup must not end the worker; the next beat retries
                tqdm.write(f"warning: sweep heartbeat: {type(e).__name__}: {e}")

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def run_trial(sweep: Sweep, trial, data: FashionMNIST) -> None:
    """Train the trial's run folder, report each epoch, and tell the study how it ended. Asked to
    stop (Ctrl-C, SIGTERM), it leaves the trial to be retried by the next worker and re-raises."""
    from optuna.trial import TrialState

    storage = sweep.study._storage
    out = trial_dir(sweep.folder, trial.number)
    cfg = sweep.space.config(trial.params, quiet=True, **sweep.where)
    storage.set_trial_user_attr(trial._trial_id, "run_dir", str(out))
    start, epochs = time.perf_counter(), []

    def on_epoch(row: dict) -> None:
        epochs.append(row["val_accuracy"])
        trial.report(row["val_accuracy"], int(row["epoch"]))
        if row["epoch"] < cfg.epochs and trial.should_prune():  # after the last epoch it is complete
            raise Pruned(int(row["epoch"]))

    prepared = None
    try:
        prepared = start_run(cfg, out, overwrite=True, data=data)
        fit_run(prepared, cfg, on_epoch=on_epoch)
    except Pruned as e:
        prepared.folder.mark(
            "pruned",
            {
                "epoch": e.epoch,
                "val_accuracy": epochs[-1],
                "reason": "the pruner stopped it: below the other trials at this epoch",
            },
        )
        state, value = TrialState.PRUNED, None
    except Interrupted as e:
        retry(sweep, trial, "its worker was asked to stop")
        then = f"trial {trial.number} is queued again: the next `fmnist sweep run {sweep.study.study_name}` runs it"
        raise Interrupted(e.signum, e.epoch, e.step, then=then) from None
    except (Diverged, FmnistError) as e:
        storage.set_trial_user_attr(trial._trial_id, "failed", str(e))
        state, value = TrialState.FAIL, None
    else:
        state, value = TrialState.COMPLETE, max(epochs)
    finish(sweep, trial, state, value, len(epochs), time.perf_counter() - start)
    if prepared is not None:
        track_trial(prepared.folder, cfg, sweep.study.study_name, sweep.folder)  # where --track says


def retry(sweep: Sweep, trial, reason: str) -> None:
    """End a trial that was not allowed to finish as failed, and queue its parameters again."""
    from optuna.trial import TrialState

    with study_lock(sweep.storage_url, sweep.folder, sweep.study.study_name):
        sweep.study._storage.set_trial_user_attr(trial._trial_id, "failed", reason)
        tell(sweep.study, trial, None, TrialState.FAIL)
        sweep.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    folder = RunFolder(trial_dir(sweep.folder, trial.number))
    if folder.path.is_dir():
        folder.mark("failed", {"reason": reason, "retried": True})


def tell(study, trial, value: float | None, state) -> None:
    """study.tell, where the grid sampler's wish to stop the study once its grid is taken is left
    to the worker's own count: Optuna raises it as an error outside its optimize loop (after
    storing the trial's state), which ended the worker with a traceback."""
    try:
        study.tell(trial, value, state=state)
    except RuntimeError as e:
        if "Study.stop" not in str(e):
            raise


def finish(sweep: Sweep, trial, state, value: float | None, epochs: int, seconds: float) -> None:
    """Tell the study how a trial ended, and say so in a line."""
    storage = sweep.study._storage
    storage.set_trial_user_attr(trial._trial_id, "epochs", epochs)
    storage.set_trial_user_attr(trial._trial_id, "seconds", seconds)
    tell(sweep.study, trial, value, state)
    if not sweep.quiet:
        shown = f"validation {value:.4f}" if value is not None else state.name.lower()
        tqdm.write(
            f"trial {trial.number}: {shown} after {epochs} epoch(s), "
            + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
        )


def run_worker(sweep: Sweep) -> int:
    """Run trials until the study holds `sweep.trials`; returns how many this worker ran. Ctrl-C
    or SIGTERM stops it between steps or trials (Interrupted), its trial queued to be retried."""
    data = load_data(sweep.space.config({}, **sweep.where))
    done = 0
    with stops.STOP.catching(), Heartbeat(sweep) as beat:
        while not stops.STOP.set and (trial := next_trial(sweep)) is not None:
            beat.trial_id = trial._trial_id
            try:
                run_trial(sweep, trial, data)
            finally:
                beat.trial_id = None
            done += 1
        if stops.STOP.set:
            raise Interrupted(stops.STOP.signum)
    return done
