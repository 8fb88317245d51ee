"""A plain-CLIP yardstick for the demo: what the same encoders learn from the same shards in the same
budget with a symmetric InfoNCE alone (no momentum encoder, no queue, no fusion objectives).

    python -m benchmarks.learning_baseline [--config demo] [--ranks 2] [--demo-run runs/demo] [key=value ...]

Builds the project's dual encoder (trainer.model.DualEncoder: the ViT, the text BERT and the two
projections, pooled and initialised as the config says), its train loader and its device augmentation
from the config plus overrides, and trains in one process on the demo's global batch (data.batch_size x
--ranks samples a step) for the demo's number of steps, with the demo's AdamW and warm-up + cosine
schedule and a learnable temperature (init, clamp and weight decay as TCL's). Then it prints held-out
ITC retrieval next to the final eval of a demo run (its ITM re-ranked and ITC-only recalls) and both
runs' seconds per step. Run it on an otherwise idle machine with OMP_NUM_THREADS=1 for comparable times.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.config import RunConfig, load
from trainer.data import build_eval_data, build_train_loader, prepare_streaming_env, tokenize
from trainer.data.device_augment import DeviceAugment
from trainer.data.tokenizer import load_tokenizer
from trainer.engine import build_optimizer, learning_rate
from trainer.eval.retrieval import encode_corpus, recall_at_k
from trainer.model import DualEncoder

logger = logging.getLogger("benchmarks.learning_baseline")
COLUMNS = ("tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10", "r_mean")


class PlainCLIP(DualEncoder):
    """The dual encoder plus a one-element temperature (named `temp`, so weight decay treats it as TCL's)."""

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg.model)
        self.temp = nn.Parameter(torch.full((1,), cfg.model.temp_init))

    def forward(self, image: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Symmetric InfoNCE over the in-batch pairs."""
        _, img = self.encode_image(image)
        _, txt = self.encode_text(input_ids, attention_mask)
        logits = img @ txt.t() / self.temp.clamp(self.cfg.temp_min, self.cfg.temp_max)
        labels = torch.arange(len(img), device=img.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def train_plain_clip(cfg: RunConfig) -> tuple[dict[str, float], float, int]:
    """(held-out ITC recall, median seconds per step, steps) of a plain CLIP trained under cfg."""
    torch.manual_seed(cfg.seed)
    device = torch.device("cpu")
    tokenizer = load_tokenizer(cfg.model.text.tokenizer)
    loader = build_train_loader(cfg, rank=0, world_size=1, tokenizer=tokenizer)
    total_steps = cfg.optim.max_steps or cfg.optim.epochs * len(loader)
    model = PlainCLIP(cfg).train()
    augment = DeviceAugment(cfg.data.augment)
    optimizer = build_optimizer(model, cfg.optim, fused=False)
    step, step_times = 0, []
    while step < total_steps:
        for batch in loader:
            start = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total_steps, cfg.optim)
            view1, _ = augment(batch["image_u8"], batch["aug_params"])
            loss = model(view1, batch["input_ids"], batch["attention_mask"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            step_times.append(time.perf_counter() - start)
            step += 1
            if step % cfg.log.every_steps == 0:
                logger.info("plain CLIP step %d/%d loss %.4f temp %.4f", step, total_steps, loss.item(), model.temp.item())
            if step == total_steps:
                break

    data = build_eval_data(cfg)
    ids, mask = tokenize(data.texts, tokenizer, cfg.data.eval_max_tokens)
    model.eval()
    no_autocast = torch.autocast("cpu", enabled=False)
    corpus = encode_corpus(model, data.images, ids, mask, cfg.eval.batch_size, device, no_autocast)
    sims = (corpus.image_feat @ corpus.text_feat.t()).numpy()
    return recall_at_k(sims, sims.T, data.img2txt, data.txt2img), statistics.median(step_times), total_steps


def demo_figures(run: Path) -> tuple[dict[str, float], dict[str, float], float, int] | None:
    """(ITM re-ranked recall, ITC-only recall, median seconds per step, steps) of a run's final eval."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    train = [r for r in records if r["kind"] == "train"]
    if not evals or not train:
        return None
    recall = evals[-1]["recall"]
    itc = {k: recall[f"itc_{k}"] for k in COLUMNS}
    return recall, itc, statistics.median(r["step_time"] for r in train), train[-1]["step"]


def table(rows: list[tuple[str, dict[str, float], float, int]]) -> str:
    head = "| run | TR@1 | TR@5 | TR@10 | IR@1 | IR@5 | IR@10 | mean | steps | s/step |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, recall, step_time, steps in rows:
        cells = " | ".join(f"{recall[k]:.1f}" for k in COLUMNS)
        lines.append(f"| {name} | {cells} | {steps} | {step_time:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="demo")
    parser.add_argument("--ranks", type=int, default=2, help="the demo's ranks: the global batch is data.batch_size x ranks")
    parser.add_argument("--demo-run", type=Path, default=Path("runs/demo"), help="a finished demo run to print beside")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("LOCAL_WORLD_SIZE", "1")
    prepare_streaming_env()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    base = load(args.config, args.overrides)
    cfg = load(args.config, [*args.overrides, f"data.batch_size={base.data.batch_size * args.ranks}"])

    recall, step_time, steps = train_plain_clip(cfg)
    rows = [("plain CLIP (symmetric InfoNCE, ITC)", recall, step_time, steps)]
    demo = demo_figures(args.demo_run)
    if demo is None:
        print(f"no finished run at {args.demo_run}: run `bash scripts/demo.sh` first to print the demo beside it")
    else:
        demo_recall, demo_itc, demo_step_time, demo_steps = demo
        rows += [(f"{args.demo_run} (ITC top-k, ITM re-rank)", demo_recall, demo_step_time, demo_steps),
                 (f"{args.demo_run} (ITC only)", demo_itc, demo_step_time, demo_steps)]
    print(f"held-out retrieval, global batch {cfg.data.batch_size}, {args.config} encoders"
          f" (text pool {cfg.model.text.pool}, image pool {cfg.model.vision.pool})")
    print(table(rows))


if __name__ == "__main__":
    main()
