"""Orchestrates one `gcl-synth run`: inputs -> plan -> distribute -> stats -> manifest.

Configuration errors stop the run before any work starts; per-image errors are counted; a
failed shard is retried and then reported, never losing the shards already committed.
"""

from __future__ import annotations

import logging
import os
import re
import resource
import time
import dataclasses
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from gcl.errors import UserError
from gcl.synth.recipe import parse_recipe
from gcl.synth.distribute import Runtime, run_dask, run_local, threads_per_worker, _GENERATORS
from gcl.synth.generators import load_generator
from gcl.io import refuse_links
from gcl.shardset import OutputLayout, check_set_name
from gcl.synth.lock import OutputLock
from gcl.inputs import list_inputs
from gcl.manifest import load_manifest, write_manifest
from gcl.synth.plan import Plan, SynthOptions, check_or_write_plan, make_plan
from gcl.synth.defaults import input_description
from gcl.synth.reference import compare_to_reference
from gcl.synth.report import Progress, summary_table
from gcl.synth.remote_output import is_url

log = logging.getLogger("gcl.synth")
MIN_INPUTS_FOR_ERROR_RATE = 50  # judge --max-error-rate only once this many inputs were seen


class RunAborted(UserError):
    pass


@dataclass
class RunConfig:
    generator: str
    model: str | None
    input: str
    output: str
    name: str | None
    views: int
    resolution: int
    shard_size: int
    batch_size: int
    workers: int
    scheduler: str | None
    recipe: str
    seed: int
    image_format: str
    quality: int
    device: str
    dtype: str  # "auto" | "float32" | "float16" | "bfloat16"
    overwrite: bool
    retries: int
    max_error_rate: float
    limit: int | None
    manifest_copy: str | None
    reference: str | None = None  # a published manifest: report whether these shards match it
    progress: bool = True
    residual: bool = False  # views are x + G(view) - G(reconstruction)
    pixel_range: str = "auto"  # VQ-GAN pixel range: auto (from the model's layout), "0-1" or "-1-1"
    per_class: int | None = None  # the first N images of each class (after limit): a class-balanced subset
    label_key: str | None = None  # WebDataset / img2dataset inputs: the json field holding the label
    node_rank: int = 0  # several machines, one output: this node writes the shards with index % num_nodes == rank
    num_nodes: int = 1


def resolve_dtype(dtype: str, device: torch.device) -> str:
    if dtype == "auto":
        return "float16" if device.type == "cuda" else "float32"
    if device.type == "cpu" and dtype in ("bfloat16", "float16"):
        raise UserError(f"--dtype {dtype} on CPU is 40-75x slower than float32 here (no native support); use float32")
    return dtype


def prepare(cfg: RunConfig):
    """Everything that can fail on configuration, before any work: returns (plan, runtime, generator)."""
    from gcl.synth.generators.base import pick_device

    from gcl.synth.generators import DEFAULT_RECIPES
    from gcl.synth.worker import recipe_problem

    recipe = parse_recipe(cfg.recipe or DEFAULT_RECIPES.get(cfg.generator, "noise"))
    device = pick_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    generator = load_generator(cfg.generator, cfg.model, str(device), getattr(torch, dtype), cfg.pixel_range)
    if cfg.resolution % generator.downsample:
        raise UserError(f"--resolution {cfg.resolution} must be a multiple of the generator's downsampling ({generator.downsample})")
    if recipe_problem(generator, recipe):
        raise UserError(recipe_problem(generator, recipe))
    inputs = list_inputs(cfg.input, cfg.label_key)
    name = check_set_name(cfg.name or default_name(cfg), "--name" if cfg.name else "the default name")
    name = cfg.name or default_name(cfg)
    options = SynthOptions(generator=generator.id, weights_sha256=generator.weights_sha256, recipe=recipe.spec,
                           views=cfg.views, resolution=cfg.resolution, image_format=cfg.image_format,
                           quality=cfg.quality, seed=cfg.seed, batch_size=cfg.batch_size, dtype=dtype,
                           device_type=device.type, residual=cfg.residual)
    plan = make_plan(inputs, cfg.output, name, cfg.shard_size, options, cfg.limit, cfg.per_class)
    if not plan.tasks:
        raise UserError(f"no inputs to process in {cfg.input}")
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    rt = Runtime(options, cfg.generator, generator.model_id, "auto-gpu" if gpus > 1 and cfg.workers > 1 else str(device), dtype,
                 tuple(inputs.class_names) if inputs.class_names else None, threads_per_worker(cfg.workers), cfg.pixel_range)
    return plan, rt, generator, inputs


def default_name(cfg: RunConfig) -> str:
    """From the input's name: a file's stem, a folder's name, or the folder of a tar pattern or list."""
    first = cfg.input.replace(",", " ").split()[0].rstrip("/") if cfg.input.strip() else "input"
    if first.endswith(".tar") or "{" in first:
        first = first.rsplit("/", 1)[0] if "/" in first else "input"
    stem = re.sub(r"\W", "_", Path(first).stem.replace(".", "_").replace("-", "_")) or "input"
    return f"{stem}_{cfg.generator}_k{cfg.views}_r{cfg.resolution}"


def execute(cfg: RunConfig) -> dict:
    remote = None
    if is_url(cfg.output):  # an object store: the run writes a local staging folder and publishes it
        from gcl.synth.remote_output import RemoteFolder, staging_folder

        remote = RemoteFolder(cfg.output)
        remote.check_writable()  # a missing bucket or a refused credential: one line before any work
        role = f"node-{cfg.node_rank}-of-{cfg.num_nodes}" if cfg.num_nodes > 1 else "run"
        cfg = dataclasses.replace(cfg, output=staging_folder(remote.url, role))
    plan, rt, generator, inputs = prepare(cfg)
    if cfg.num_nodes > 1:  # each node writes only its own shards, under a lock of its own rank
        from gcl.synth.nodes import node_lock

        with node_lock(cfg.output, cfg.node_rank, cfg.num_nodes):
            return _execute_locked(cfg, plan, rt, generator, inputs, remote)
    with OutputLock(cfg.output):  # one writer per folder, from the plan check to the manifest
        return _execute_locked(cfg, plan, rt, generator, inputs, remote)


def _execute_locked(cfg: RunConfig, plan: Plan, rt: Runtime, generator, inputs, remote=None) -> dict:
    from gcl.synth.nodes import node_tasks

    layout = OutputLayout(cfg.output, plan.name)
    if remote is not None:
        from gcl.synth.remote_output import committed_indices, publish_plan, pull_records

        names = pull_records(remote, cfg.output)
        old_plan = Path(layout.plan).read_bytes() if os.path.exists(layout.plan) else None
    if os.path.isdir(cfg.output):  # what this run writes, or replaces with --overwrite: never through a link
        refuse_links(cfg.output, [os.path.basename(p) for p in (layout.plan, layout.manifest, layout.owner,
                                                                 *layout.own_files())],
                     hint="remove it or choose another --output")
    check_or_write_plan(plan, cfg.overwrite)
    if remote is not None:
        publish_plan(remote, names, cfg.output, plan.name, old_plan)
        rt = dataclasses.replace(rt, output_url=remote.url,
                                 committed=frozenset(committed_indices(remote.names(), plan.name)))
    tasks = node_tasks(plan.tasks, cfg.node_rank, cfg.num_nodes)
    for task in tasks:  # left by a killed run of this node: never committed
        for stale in layout.unfinished(task.index):
            Path(stale).unlink(missing_ok=True)
    _GENERATORS[rt.generator_key(rt.device)] = generator  # reuse in-process
    results: dict[int, dict] = {}
    failed: dict[int, str] = {}
    totals = Counter()
    left = [t for t in tasks if not (t.index in rt.committed if remote is not None
                                     else Path(t.stats_path).exists() and Path(t.tar_path).exists())]
    if not left:  # a re-run after a complete one: no bar (its rate would be the speed of reading stats files)
        print(f"nothing left: all {len(tasks)} shards already committed in {remote.url if remote else cfg.output}")
    elif len(left) < len(tasks):
        print(f"resuming: {len(tasks) - len(left)} of {len(tasks)} shards already committed")
    progress = Progress(sum(len(t.items) for t in left), enabled=cfg.progress and bool(left))
    t0, cpu0 = time.perf_counter(), cpu_seconds()

    def on_done(task, stats, error):
        if stats is None:
            failed[task.index] = error
            log.error("shard %d failed after %d retries: %s", task.index, cfg.retries, error)
            return
        results[task.index] = stats
        totals["inputs"] += stats["inputs"]
        totals["errors"] += sum(stats["errors"].values())
        if not stats.get("resumed") and (cfg.workers > 1 or cfg.scheduler):
            progress.update(stats["samples"], sum(stats["errors"].values()))

    def too_many_errors() -> bool:
        return totals["inputs"] >= MIN_INPUTS_FOR_ERROR_RATE and totals["errors"] / totals["inputs"] > cfg.max_error_rate

    def aborted() -> RunAborted:
        return RunAborted(f"error rate {totals['errors']}/{totals['inputs']} exceeds --max-error-rate "
                          f"{cfg.max_error_rate}; committed shards are kept, fix the inputs and re-run")

    def guarded_on_done(task, stats, error):
        on_done(task, stats, error)
        if too_many_errors():
            raise aborted()

    try:
        if cfg.workers > 1 or cfg.scheduler:
            run_dask(tasks, rt, cfg.retries, on_done, cfg.workers, cfg.scheduler, too_many_errors)
            if too_many_errors():
                raise aborted()
        else:
            torch.set_num_threads(rt.torch_threads)
            run_local(tasks, rt, cfg.retries, guarded_on_done, progress=progress.update)
    finally:
        progress.close()
    seconds = time.perf_counter() - t0
    manifest = build_manifest(plan, inputs, results, failed, seconds, generator)
    manifest["residual"] = plan.options.residual
    manifest["cost"] = synthesis_cost(generator, plan, manifest["throughput"], cpu_seconds() - cpu0)
    if cfg.num_nodes > 1:
        return _node_done(cfg, plan, manifest, results, failed, seconds, remote)
    manifest_path = Path(layout.manifest)
    if manifest_path.exists():
        previous = load_manifest(manifest_path)
        if manifest["throughput"]["generated_samples"] == 0:
            # a re-run that found everything committed keeps the throughput of the run that did the work
            manifest["throughput"] = previous.get("throughput", manifest["throughput"])
            manifest["cost"] = previous.get("cost", manifest["cost"])
        if "view_stats" in previous:  # measured later by `gcl-synth viewstats`; same plan, same shards
            manifest["view_stats"] = previous["view_stats"]
    path = write_manifest(manifest, manifest_path, cfg.output)
    if remote is not None:
        remote.publish(str(path))  # last: the set is complete at the URL once its manifest is there
        path = f"{remote.url}/{path.name}"
    if cfg.manifest_copy:
        write_manifest_copy(manifest, cfg.manifest_copy, cfg.output, remote)
    for index in sorted(i for i in results if results[i].get("remade")):
        print(f"shard {index} is made again: the committed one was not this plan's ({results[index]['remade']})")
    print(summary_table(plan, results, failed, seconds))
    print(f"manifest: {path}")
    match = None
    if cfg.reference:
        match, lines = compare_to_reference(manifest, load_manifest(cfg.reference))
        verdict = {True: "MATCH", False: "MISMATCH", None: "NOT COMPARED"}[match]
        print(f"reference {cfg.reference}: {verdict}: " + "\n  ".join(lines))
    return {"manifest": str(path), "failed": failed, "results": results, "reference_match": match}


def write_manifest_copy(manifest: dict, copy: str, output: str, remote=None) -> None:
    """--manifest: a copy elsewhere (manifests/NAME.json) whose base points at the shards: the
    output folder, or the output URL (which carries no credentials: check_output_url)."""
    write_manifest(manifest, copy, output if remote is None else remote.url)


def _node_done(cfg: RunConfig, plan: Plan, manifest: dict, results: dict, failed: dict, seconds: float,
               remote=None) -> dict:
    """A node of several writes its part record, not the manifest (gcl-synth finalize does that)."""
    from gcl.synth.nodes import describe_part, write_part

    mine = [t.index for t in plan.tasks if t.index % cfg.num_nodes == cfg.node_rank]
    manifest["pending"] = [i for i in mine if i not in results]
    path = write_part(cfg.output, manifest, cfg.node_rank, cfg.num_nodes)
    print(summary_table(plan, results, failed, seconds))
    if remote is not None:
        remote.publish(str(path))
        print(describe_part(path, remote.url))
    else:
        print(describe_part(path))
    return {"manifest": None, "failed": failed, "results": results, "reference_match": None}


def cpu_seconds() -> float:
    """CPU time of this process (all its threads) and of its finished children (local dask workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def synthesis_cost(generator, plan: Plan, throughput: dict, cpu: float) -> dict:
    """FLOPs per input image (all K views, counted once on a small batch) and the measured time,
    so a study can put synthesis cost next to training cost. Wall seconds alone cannot tell a slow
    sitting from a crowded machine: the CPU seconds it got and the load average at its end can."""
    from gcl.synth.worker import count_flops

    opts = plan.options
    flops = count_flops(generator, parse_recipe(opts.recipe), opts.views, opts.resolution, opts.seed, opts.residual)
    return {"flops_per_image": flops, "seconds": throughput["seconds"], "images": throughput["generated_samples"],
            "cpu_seconds": round(cpu, 3), "load_avg_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}


def shard_entry(index: int, stats: dict) -> dict:
    """One shard's line in the manifest, from its stats file."""
    return {"url": stats["shard"], "index": index, "samples": stats["samples"], "bytes": stats["bytes"],
            "sha256": stats["sha256"], "errors": stats["errors"], "pixel_sketch": stats.get("pixel_sketch")}


def build_manifest(plan: Plan, inputs, results: dict, failed: dict, seconds: float, generator) -> dict:
    shards = []
    errors = Counter()
    for idx in sorted(results):
        shards.append(shard_entry(idx, results[idx]))
        errors.update(results[idx]["errors"])
    generated = sum(s["samples"] for s in shards) - sum(results[i]["samples"] for i in results if results[i].get("resumed"))
    return {
        "name": plan.name, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "complete": not failed and len(results) == len(plan.tasks),
        "generator": {"family": generator.family, "id": generator.id, "hub_id": generator.hub_id,
                      "weights_sha256": plan.options.weights_sha256, **generator.extra},
        "recipe": parse_recipe(plan.options.recipe).to_json(), "views": plan.options.views,
        "resolution": plan.options.resolution, "image_format": plan.options.image_format,
        "quality": plan.options.quality, "seed": plan.options.seed, "dtype": plan.options.dtype,
        "device_type": plan.options.device_type, "batch_size": plan.options.batch_size,
        # the float kernels a CPU run used (AVX2, AVX512...): other ones give other bytes, same sketches
        "cpu_capability": torch.backends.cpu.get_cpu_capability() if plan.options.device_type == "cpu" else None,
        "input": {"name": Path(inputs.root).name, "kind": inputs.kind, "count": plan.num_inputs,
                  "fingerprint": plan.input_fingerprint, "description": input_description(inputs, plan.input_fingerprint)},
        "plan_fingerprint": plan.fingerprint, "labelled": inputs.class_names is not None,
        "class_names": inputs.class_names, "shards": shards,
        "pending": sorted(t.index for t in plan.tasks if t.index not in results),
        "failed": {str(k): v for k, v in sorted(failed.items())},
        "totals": {"shards": len(shards), "samples": sum(s["samples"] for s in shards),
                   "bytes": sum(s["bytes"] for s in shards), "errors": dict(errors)},
        "throughput": {"seconds": round(seconds, 3), "generated_samples": generated,
                       "images_per_s": round(generated / seconds, 3) if seconds > 0 else 0.0},
    }
