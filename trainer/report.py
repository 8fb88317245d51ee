"""`python -m trainer.report RUN_DIR`: a run's final losses and retrieval table, and its PNG."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainer.plots import plot_run, read_records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    metrics = args.run_dir / "metrics.jsonl"
    if not metrics.is_file():
        print(f"error: {metrics} does not exist: is {args.run_dir} a run's output_dir?", file=sys.stderr)
        return 2
    train, evals = read_records(metrics)
    if train:
        last = train[-1]
        print(f"step {last['step']}/{last['total_steps']}  " + "  ".join(f"{k} {v:.3f}" for k, v in last["losses"].items()))
    if evals:
        r = evals[-1]["recall"]
        print("\nheld-out retrieval (ITC top-k re-ranked by ITM), %")
        print(f"{'':>8} {'R@1':>7} {'R@5':>7} {'R@10':>7}")
        print(f"{'text':>8} {r['tr_r1']:7.2f} {r['tr_r5']:7.2f} {r['tr_r10']:7.2f}")
        print(f"{'image':>8} {r['ir_r1']:7.2f} {r['ir_r5']:7.2f} {r['ir_r10']:7.2f}")
        print(f"mean recall {r['r_mean']:.2f}")
    png = plot_run(metrics, args.run_dir / "metrics.png", title=args.run_dir.name)
    print(f"\nloss curves and recall: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
