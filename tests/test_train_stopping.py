"""A stop signal whose exception Python would swallow still stops the run at once, with no
traceback: one inside a finalizer (a DataLoader iterator's __del__ joining its workers), one inside
an at-fork callback (a loader worker forked at an epoch's start), and one caught by a library."""

import subprocess
import sys

import pytest

SCRIPT = r"""
import os, signal, time
from gcl.train import stopping

stopping.stop_on_signals()

class JoinsItsWorkers:
    def __del__(self):  # as _MultiProcessingDataLoaderIter.__del__ does at an epoch's end
        signal.raise_signal(signal.SIG)
        time.sleep(0.05)

def after_fork():  # as logging's lock release runs in the trainer when a loader worker is forked
    if os.environ.get("AT_FORK"):
        signal.raise_signal(signal.SIG)
        time.sleep(0.05)

os.register_at_fork(after_in_parent=after_fork)
try:
    if os.environ.get("AT_FORK"):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    else:
        JoinsItsWorkers()  # dropped at once: __del__ runs, the signal lands in it
    for _ in range(100):
        time.sleep(0.01)
    print("ran on")
except stopping.Stopped as exc:
    print(f"stopped by {exc}; received {stopping.received()}")
"""


@pytest.mark.parametrize("where", ["finalizer", "at-fork callback"])
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_where_python_swallows_exceptions_still_stops_the_run_without_a_traceback(sig, where):
    """Python swallows an exception raised in __del__ or in an at-fork callback (the trainer joins
    loader workers at every epoch's end and forks new ones at the next start): the signal is
    delivered again right after, and nothing is printed."""
    import os
    import signal

    env = {**os.environ, **({"AT_FORK": "1"} if where == "at-fork callback" else {})}
    proc = subprocess.run([sys.executable, "-c", SCRIPT.replace("signal.SIG)", f"signal.{sig})")],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"stopped by {sig}; received {int(getattr(signal, sig))}"
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr


def test_a_stop_that_a_library_swallowed_is_raised_at_the_next_batch(tmp_path):
    """Code that catches KeyboardInterrupt and goes on (here a callback, in a library elsewhere)
    does not keep the run going: the next batch raises the stop, and run.json says interrupted."""
    import json
    import os
    import signal
    import time

    from lightning.pytorch.callbacks import Callback
    from test_train_data import CIFAR_TEST, make_shards

    from gcl.train import stopping
    from gcl.train.config import load_config
    from gcl.train.run import train

    class SwallowsAStop(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 2:
                try:
                    os.kill(os.getpid(), signal.SIGINT)  # Lightning has its own SIGTERM flag: SIGINT has none
                    for _ in range(50):
                        time.sleep(0.01)  # the handler runs in here
                except stopping.Stopped:
                    pass  # swallowed

    manifest = make_shards(tmp_path / "s", n=64, per_shard=16)
    cfg = load_config(None, {"shards": (str(manifest),), "output": str(tmp_path / "run"), "backbone": "resnet20",
                             "batch_size": 16, "epochs": 3, "num_workers": 0, "gen_prob": 0.5})
    previous = stopping.stop_on_signals()
    try:
        with pytest.raises(BaseException):
            train(cfg, resume=False, extra_callbacks=(SwallowsAStop(),))
    finally:
        stopping.restore(previous)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "interrupted" and info["global_step"] == 2, info  # 12 steps without the check
    assert stopping.received() is None  # restored: a later run in this process is not stopped by this one
