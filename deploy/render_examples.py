"""Regenerate the example training jobs in deploy/k8s/jobs/ from api/k8s/templates/.

    python deploy/render_examples.py           # rewrite the examples
    python deploy/render_examples.py --check   # exit 1 if any example is stale

The examples are the renderer's output for one sample run (configs/pretrain_4m.yaml on 2 nodes x 8 GPUs),
so they double as reviewed golden files: tests/deploy checks that rendering still gives exactly them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from api.k8s import TrainingJobSpec, render_training_job, to_yaml

ROOT = Path(__file__).resolve().parents[1]
JOBS_DIR = ROOT / "deploy" / "k8s" / "jobs"
FLAVORS = ("pytorchjob", "trainjob", "indexed-job")
ELASTIC = "pytorchjob-elastic"
"""A PyTorchJob that carries on with 1 of its 2 nodes after a node loss (elasticPolicy)."""
HEADER = (
    "# Rendered by deploy/render_examples.py from api/k8s/templates/ for a sample run; do not edit by hand.\n"
    "# Apply with `kubectl -n tcl apply -f` after the steps of deploy/README.md; the API renders its own per run.\n"
)


def sample_config_yaml() -> str:
    """configs/pretrain_4m.yaml with checkpoints on the shared volume the jobs mount at /runs."""
    tree = yaml.safe_load((ROOT / "configs" / "pretrain_4m.yaml").read_text())
    tree["output_dir"] = "/runs/pretrain-4m"
    tree.setdefault("engine", {})["collective_timeout_s"] = 600  # a lost node ends the job in 10 min, not 30
    return yaml.safe_dump(tree, sort_keys=False)


def sample_spec(flavor: str) -> TrainingJobSpec:
    if flavor == ELASTIC:
        return TrainingJobSpec(**{**sample_spec("pytorchjob").model_dump(), "name": "tcl-pretrain-4m-elastic",
                                  "min_nodes": 1})
    return TrainingJobSpec(
        name="tcl-pretrain-4m",
        namespace="tcl",
        image="tcl-trainer:0.1.0",
        flavor=flavor,
        nodes=2,
        procs_per_node=8,
        gpus_per_proc=1,
        config_yaml=sample_config_yaml(),
        s3_secret="tcl-s3",
        output_pvc="tcl-runs",
        # Pods have one interface (eth0); on bare hosts name the one that reaches the other nodes.
        env={"NCCL_DEBUG": "WARN", "NCCL_SOCKET_IFNAME": "eth0", "GLOO_SOCKET_IFNAME": "eth0"},
    )


def render_examples() -> dict[Path, str]:
    """Each example file's path and the text it should have."""
    return {JOBS_DIR / f"{flavor}.yaml": HEADER + to_yaml(render_training_job(sample_spec(flavor)))
            for flavor in (*FLAVORS, ELASTIC)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale examples instead of rewriting them")
    args = parser.parse_args(argv)
    examples = render_examples()
    stale = [path for path, text in examples.items() if not path.is_file() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)} (run python deploy/render_examples.py)", file=sys.stderr)
        return 1 if stale else 0
    JOBS_DIR.mkdir(parents=True, exist_ok=True)
    for path in stale:
        path.write_text(examples[path])
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
