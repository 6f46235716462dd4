"""Markdown tables for docs/benchmarks.md from a bench/gpu_checks.sh summary.json (nothing else).

    python bench/gpu_table.py bench/results/summary.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _num(value, fmt: str = "{:,.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def families_table(res: dict) -> list[str]:
    rows = [f"Dense bf16 matmul peak measured in the same run: {_num(res.get('bf16_matmul_peak_tflops'), '{:.4g}')} TFLOP/s "
            f"({res.get('device')}, {res.get('resolution')} px, batch {res.get('batch')}, {res.get('model_sizes')} "
            f"sizes, {res.get('weights')}).", "",
            "| family | precision | img/s | GFLOP/img | % of bf16 peak | peak GPU GiB | PSNR vs fp32 | NaNs |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for fam, r in res.get("families", {}).items():
        for prec in ("fp16", "bf16"):
            row = r.get(prec) or {"error": r.get("error", "not measured")}
            if "error" in row:
                rows.append(f"| {fam} | {prec} | {row['error'][:60]} | | | | | |")
                continue
            share = row.get("share_of_bf16_peak")
            psnr = "identical" if row.get("identical_to_fp32") else _num(row.get("psnr_vs_fp32_db"), "{:.1f} dB")
            rows.append(f"| {fam} | {prec} | {_num(row['img_s'])} | {_num(row['gflops_per_image'], '{:,.2f}')} | "
                        f"{_num(None if share is None else 100 * share, '{:.1f}%')} | "
                        f"{_num(row.get('peak_gpu_mem_gib'), '{:.1f}')} | {psnr} | {row.get('nan_count', '-')} |")
    return rows


def synthesis_table(res: dict) -> list[str]:
    rows = ["| model (weights) | images | model-only img/s | `gcl-synth run` img/s | ratio (goal >= 0.9) |",
            "| --- | --- | --- | --- | --- |"]
    for fam, r in res.get("families", {}).items():
        rows.append(f"| {fam} ({r['weights']}) | {r['images']} | {_num(r['model_only_img_s'])} | "
                    f"{_num(r['pipeline_img_s'])} | {r['pipeline_vs_model_only']:.2f} |")
    return rows


def training_table(r: dict) -> list[str]:
    return ["| setting | samples/s | data-wait share (goal < 10%) | with epoch start-up | timed steps |",
            "| --- | --- | --- | --- | --- |",
            f"| {r['backbone']} {r['method']}, {r['precision']}, batch {r['batch']}, {r['loader_workers']} loader workers | "
            f"{_num(r['samples_per_s'])} | {_num(100 * r['data_wait_share'], '{:.1f}%')} | "
            f"{_num(100 * r['data_wait_share_with_startup'], '{:.1f}%')} | {r['timed_steps']} |"]


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/gpu_table.py SUMMARY.json")
    summary = json.loads(Path(sys.argv[1]).read_text())
    out = [f"From `{Path(sys.argv[1]).name}` ({summary.get('mode')} run, {summary.get('device')}, torch "
           f"{summary.get('torch')}, {summary.get('started_utc')}).", ""]
    sections = (("families", families_table), ("synthesis", synthesis_table), ("training", training_table))
    for name, table in sections:
        check = summary.get("checks", {}).get(name, {})
        if check.get("results"):
            out += table(check["results"]) + [""]
        out.append(f"Check `{name}`: {check.get('status', 'absent')}" + (f" ({check['why']})" if "why" in check else ""))
        out.append("")
    study = summary.get("checks", {}).get("study", {})
    out.append(f"Check `study`: {study.get('status', 'absent')}; new results: {', '.join(study.get('new_results', [])) or 'none'}"
               + (f" ({study['why']})" if "why" in study else ""))
    print("\n".join(out))


if __name__ == "__main__":
    main()
