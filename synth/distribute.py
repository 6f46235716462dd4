"""Distributor: a function over shard tasks, run in this process or on a dask cluster.

Both paths call the same `run_task` (generator loaded once per process and cached), retry a
failed shard `retries` times, and report each finished shard to `on_done` as it completes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from gcl.io import storage_error
from gcl.synth.recipe import parse_recipe
from gcl.synth.plan import ShardTask, SynthOptions

log = logging.getLogger("gcl.synth")
_GENERATORS: dict = {}  # per-process cache: Runtime.generator_key(device) -> Generator


@dataclass(frozen=True)
class Runtime:
    """What a worker needs besides the task (picklable)."""

    options: SynthOptions
    family: str  # generator family to load
    model: str  # where to load it from (local folder or hub id): a runtime fact, never written to shards
    device: str  # "cpu", "cuda", "cuda:N" or "auto-gpu" (pick this dask worker's GPU)
    dtype: str
    class_names: tuple[str, ...] | None
    torch_threads: int
    pixel_range: str = "auto"  # VQ-GAN pixel range option (see generators.vqgan)
    output_url: str | None = None  # an object-store --output: shards are published there (synth.remote_output)
    committed: frozenset[int] = frozenset()  # shards committed at output_url when the run started

    def generator_key(self, device: str) -> tuple:
        return (self.family, self.model, device, self.dtype, self.pixel_range)


def get_generator(rt: Runtime):
    from gcl.synth.generators import load_generator

    device = rt.device
    if device == "auto-gpu":
        device = f"cuda:{_worker_ordinal() % max(1, torch.cuda.device_count())}"
    key = rt.generator_key(device)
    if key not in _GENERATORS:
        _GENERATORS[key] = load_generator(rt.family, rt.model, device, getattr(torch, rt.dtype), rt.pixel_range)
    return _GENERATORS[key]


def _worker_ordinal() -> int:
    try:
        from distributed import get_worker

        return int(str(get_worker().name).rsplit("-", 1)[-1])
    except (ImportError, ValueError):
        return 0


def run_task(task: ShardTask, rt: Runtime, progress=None) -> dict:
    if rt.torch_threads and torch.get_num_threads() != rt.torch_threads:
        torch.set_num_threads(rt.torch_threads)
    from gcl.synth.worker import process_shard

    remote = None
    if rt.output_url:
        from gcl.synth.remote_output import RemoteFolder, fetch_shard

        remote = RemoteFolder(rt.output_url)
        fetch_shard(remote, task.tar_path, task.stats_path, task.index in rt.committed)
    stats = process_shard(task, rt.options, get_generator(rt), parse_recipe(rt.options.recipe),
                          list(rt.class_names) if rt.class_names else None, progress)
    if remote is not None:
        from gcl.synth.remote_output import publish_shard

        publish_shard(remote, task.tar_path, task.stats_path, stats, task.index in rt.committed)
    return stats


def run_local(tasks: Iterable[ShardTask], rt: Runtime, retries: int, on_done: Callable, progress=None) -> None:
    for task in tasks:
        for attempt in range(retries + 1):
            try:
                on_done(task, run_task(task, rt, progress), None)
                break
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # noqa: BLE001 - a failed shard is retried, then reported
                if storage_error(exc):
                    raise  # a full / read-only disk fails every retry: stop the run, keep committed shards
                log.warning("shard %d failed (attempt %d/%d): %s", task.index, attempt + 1, retries + 1, exc)
                if attempt == retries:
                    on_done(task, None, f"{type(exc).__name__}: {exc}")


def run_dask(tasks: list[ShardTask], rt: Runtime, retries: int, on_done: Callable, workers: int,
             scheduler: str | None, should_stop: Callable[[], bool]) -> None:
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        # One process per worker with 1 dask thread each; torch threads split the cores between them.
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0", silence_logs=logging.ERROR)
        client = Client(cluster)
    try:
        futures = {client.submit(run_task, t, rt, key=f"gcl-shard-{t.name}-{t.index}", retries=retries, pure=False): t
                   for t in tasks}
        for fut in as_completed(futures):
            task = futures[fut]
            try:
                on_done(task, fut.result(), None)
            except Exception as exc:  # noqa: BLE001
                on_done(task, None, f"{type(exc).__name__}: {exc}")
            if should_stop():
                for f in futures:
                    f.cancel()
                break
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def threads_per_worker(workers: int) -> int:
    """Torch threads per worker so that threads x workers <= cores."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))
