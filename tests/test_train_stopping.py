"""A stop signal that lands inside a finalizer (a DataLoader iterator's __del__ joining its
workers) still stops the run at once, and prints no traceback."""

import subprocess
import sys

import pytest

SCRIPT = r"""
import os, signal, sys, time
from gcl.train import stopping

stopping.stop_on_signals()

class JoinsItsWorkers:
    def __del__(self):  # as _MultiProcessingDataLoaderIter.__del__ does at an epoch's end
        signal.raise_signal(signal.SIG)
        time.sleep(0.05)

try:
    JoinsItsWorkers()  # dropped at once: __del__ runs, the signal lands in it
    for _ in range(100):
        time.sleep(0.01)
    print("ran on")
except stopping.Stopped as exc:
    print(f"stopped by {exc} after the finalizer; received {stopping.received()}")
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_inside_a_finalizer_still_stops_the_run_without_a_traceback(sig):
    import signal

    proc = subprocess.run([sys.executable, "-c", SCRIPT.replace("signal.SIG)", f"signal.{sig})")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"stopped by {sig} after the finalizer; received {int(getattr(signal, sig))}"
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
