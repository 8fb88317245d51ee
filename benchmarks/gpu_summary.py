"""The compact table of a GPU check: what benchmarks/gpu_check.sh left in its output folder, as Markdown
ready for benchmarks/RESULTS.md, with the issue's targets beside the measured figures.

    python -m benchmarks.gpu_summary OUT_DIR [--status 'parity=ok;train=ok;...']
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

TARGET_MILESTONE = 1100.0
TARGET_FINAL = 1480.0
TARGET_PEAK_GIB = 16.0
TARGET_LOADER_RATIO = 1.5


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def parity_line(path: Path) -> str:
    if not path.is_file():
        return "parity: no result"
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    if suite is None:
        return "parity: unreadable result"
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    failed = [case.get("name") for case in suite.iter("testcase") if case.find("failure") is not None or case.find("error") is not None]
    line = f"parity (tests/trainer/kernels + flops): {passed} passed, {counts['failures'] + counts['errors']} failed, {counts['skipped']} skipped"
    return line + (f"; failed: {', '.join(str(f) for f in failed)}" if failed else "")


def kernel_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| kernel | reference ms | fused ms | speed-up | max rel err |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['kernel']} | {r['reference_ms']:.3f} | {r['fused_ms']:.3f} | {r['speedup']:.2f}x | {r['max_relative_error']:.1e} |" for r in rows]
    return lines


def train_table(rows: list[dict[str, Any]], label: str) -> list[str]:
    phases = list(rows[0]["breakdown_ms"]) if rows else []
    lines = [
        f"| {label} | samples/s | MFU | step ms | peak GiB | GiB at start | final loss | " + " | ".join(f"{p} ms" for p in phases) + " |",
        "|---|" + "---:|" * (6 + len(phases)),
    ]
    for r in rows:
        peak, start = (("-" if r.get(k) is None else f"{r[k]:.2f}") for k in ("peak_memory_gib", "memory_at_start_gib"))
        cells = [f"{r['samples_per_sec']:,.0f}", f"{100 * r['mfu']:.1f}%", f"{r['step_ms']:.1f}", peak, start, f"{r['final_loss']:.4f}"]
        cells += [f"{r['breakdown_ms'][p]:.2f}" for p in phases]
        lines.append(f"| {r['variant']} | " + " | ".join(cells) + " |")
    return lines


def met(ok: bool) -> str:
    return "met" if ok else "not met"


def targets(train: list[dict[str, Any]] | None, loader: dict[str, Any] | None) -> list[str]:
    if not train:
        return []
    best = max(train, key=lambda r: r["samples_per_sec"])
    rate, peak = best["samples_per_sec"], best["peak_memory_gib"]
    lines = [
        (f"- best: {best['variant']} at {rate:,.0f} samples/s: milestone >= {TARGET_MILESTONE:,.0f} {met(rate >= TARGET_MILESTONE)},"
         f" target >= {TARGET_FINAL:,.0f} {met(rate >= TARGET_FINAL)}"),
        (f"- peak memory {'-' if peak is None else f'{peak:.2f} GiB'}: target <= {TARGET_PEAK_GIB:.0f} GiB"
         f" {met(peak is not None and peak <= TARGET_PEAK_GIB)}"),
    ]
    if loader:
        ratio = loader["loader_samples_per_sec"] / rate
        lines.append(f"- loader alone {loader['loader_samples_per_sec']:,.0f} samples/s ({loader['num_workers']} workers) ="
                     f" {ratio:.2f}x the best training rate: target >= {TARGET_LOADER_RATIO}x {met(ratio >= TARGET_LOADER_RATIO)}")
    losses = {r["variant"]: r["final_loss"] for r in train}
    lines.append("- final losses (same seeds and batches): " + ", ".join(f"{k} {v:.4f}" for k, v in losses.items()))
    return lines


def summary(out: Path, status: str) -> str:
    env = (out / "env.txt").read_text().strip() if (out / "env.txt").is_file() else "no env.txt"
    lines = ["## GPU check", "```", env, "```", f"steps: {status or 'unknown'}", "", parity_line(out / "parity.xml"), ""]
    kernels = read_json(out / "kernels.json")
    if kernels:
        lines += kernel_table(kernels) + [""]
    train = read_json(out / "train.json")
    if train:
        lines += train_table(train, "synthetic") + [""]
    loader_train = read_json(out / "loader_train.json")
    if loader_train:
        lines += train_table(loader_train, "real loader") + [""]
    lines += targets(train, read_json(out / "loader.json"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--status", default="", help="step=status pairs from gpu_check.sh")
    args = parser.parse_args(argv)
    print(summary(args.out, args.status))
    return 0


if __name__ == "__main__":
    sys.exit(main())
