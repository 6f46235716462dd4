"""Ctrl-C and SIGTERM end gcl-train at once, loader workers included, with a non-zero status.

The first SIGINT or SIGTERM raises Stopped (a KeyboardInterrupt) in the main thread wherever it
is: Lightning then shuts down as for Ctrl-C, train() records run.json as interrupted, and the cli
prints one line and exits with 128 + the signal number (130, 143), as a shell reports a process
ended by that signal. A second signal ends the process at once (a shutdown stuck on a dead file
system must not need `kill -9`). Lightning's own SIGTERM handling only sets a flag that its loop
reads after the current batch (and makes the process exit 0); this runs first and does not wait,
except inside a finalizer (`__del__`), where Python would swallow the exception: the signal is
then delivered again right after it. Python swallows it in places a frame does not show too (an
at-fork callback such as logging's lock release, run when a loader worker is forked at an epoch's
start; a weakref callback): there it reaches sys.unraisablehook, which says nothing and delivers
the signal again right after. A library that catches KeyboardInterrupt is the last case: the
training loop asks at every batch (raise_if_stopped) and raises a signal that came while
training goes on.

Loader workers ask the kernel for SIGTERM when the trainer dies (Linux prctl), so a trainer
killed outright (OOM, `kill -9`) leaves no worker behind.
"""

from __future__ import annotations

import _thread
import os
import signal
import sys
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
PR_SET_PDEATHSIG = 1  # linux/prctl.h

_received: list[int] = []


class Stopped(KeyboardInterrupt):
    """gcl-train was asked to stop by a signal."""


_deferred: list[int] = []  # a stop signal that landed in a finalizer, delivered again after it


def _on_signal(signum, frame) -> None:
    if _received and not _deferred:
        os._exit(128 + signum)  # the second signal: the first one's shutdown did not end in time
    if not _received:
        _received.append(signum)
    if _in_finalizer(frame):
        # Python swallows an exception raised in __del__ (printing "Exception ignored in ..." and
        # a traceback), and the run would go on: a DataLoader iterator's __del__ joins its workers
        # at every epoch's end. Deliver the signal again once the finalizer is done.
        _deliver_again(signum)
        return
    _deferred.clear()
    raise Stopped(signal.Signals(signum).name)


def _deliver_again(signum: int) -> None:
    _deferred[:] = [signum]
    timer = threading.Timer(FINALIZER_RETRY_S, _thread.interrupt_main, (signum,))
    timer.daemon = True
    timer.start()


_hook_before: list = []  # sys.unraisablehook before stop_on_signals


def _swallowed(unraisable) -> None:
    """sys.unraisablehook: a Stopped that Python swallowed (raised in an at-fork or weakref
    callback) is delivered again right after, silently; anything else goes to the hook before."""
    if isinstance(unraisable.exc_value, Stopped) and _received:
        _deliver_again(_received[0])
        return
    (_hook_before[0] if _hook_before else sys.__unraisablehook__)(unraisable)


def raise_if_stopped() -> None:
    """Raise Stopped when a stop signal came and training still goes on: its exception was raised
    where Python swallows exceptions. (A signal deferred out of a finalizer is left to its timer.)"""
    if _received and not _deferred:
        raise Stopped(signal.Signals(_received[0]).name)


FINALIZER_RETRY_S = 0.05  # how soon a signal deferred out of a finalizer is delivered again


def _in_finalizer(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def stop_on_signals() -> dict:
    """Install the handlers (main thread only: signals reach Python handlers there). A signal the
    parent set to be ignored stays ignored: a shell starts a background job (`cmd &` in a script,
    nohup) with SIGINT ignored so that a Ctrl-C in the terminal does not end it, and Python then
    installs no KeyboardInterrupt handler either. Such a trainer outlives any SIGINT by design; stop
    it with SIGTERM (what the study runner sends). Returns the handlers it replaced."""
    _received.clear()
    _deferred.clear()
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS if signal.getsignal(sig) != signal.SIG_IGN}
    for sig in previous:
        signal.signal(sig, _on_signal)
    if sys.unraisablehook is not _swallowed:
        _hook_before[:] = [sys.unraisablehook]
        sys.unraisablehook = _swallowed
    return previous


def restore(previous: dict) -> None:
    """The handlers before stop_on_signals (gcl-train's main called in-process, e.g. by a test)."""
    for sig, handler in previous.items():
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    if sys.unraisablehook is _swallowed and _hook_before:
        sys.unraisablehook = _hook_before.pop()
    # a later train() in this process (a test, a notebook) must not see this run's stop
    _received.clear()
    _deferred.clear()


def received() -> int | None:
    """The signal that stopped this run, None when none came."""
    return _received[0] if _received else None


def stopped_line(signum: int, output: str) -> str:
    name = signal.Signals(signum).name
    if not os.path.isfile(os.path.join(output, "checkpoints", "last.ckpt")):
        return f"stopped by {name} before the first checkpoint; nothing to resume in {output}"
    return (f"stopped by {name}; {output}/run.json says interrupted and the last checkpoint is kept: continue with "
            f"gcl-train --output {output} --resume")


def die_with_parent() -> None:
    """In a forked loader worker: SIGTERM when the trainer that forked it dies (Linux; elsewhere the
    DataLoader's own watchdog notices within seconds)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    except (OSError, AttributeError):
        return
