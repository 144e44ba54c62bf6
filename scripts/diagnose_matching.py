"""Train on preloaded clips and watch the matching: is each actor matched to the token at its own place?

A diagnostic for training from scratch (docs/training_notes.md, section 5), not part of the package.
It decodes the training split once (two passes, so two random flips per key frame), keeps the clips in
memory as float16, and trains with the run config's model, matcher, criterion and optimiser. Every 50
steps it prints the mean of each (unweighted) loss and two numbers about the Hungarian matching:

- ``own_cell``: share of matched actors whose token is the one whose grid cell holds the box centre;
- ``actor_rank``: for a matched token, how many tokens of its clip have a higher p(actor) (0 is best).

At the end it saves the weights to ``OUT/model.safetensors`` and evaluates frame-mAP on the val split
like ``bmvit train``.

    python scripts/diagnose_matching.py --config configs/synthetic_tiny.yaml --minutes 4 --out /tmp/diag \
        [key=value ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bmvit.box_ops import grid_cell_index
from bmvit.build import create_criterion, create_dataset, create_model_from_config, create_optimizer, create_scheduler
from bmvit.checkpoint import save_model
from bmvit.config import load_config
from bmvit.trainer import evaluate_model, model_metadata, read_class_info


def preload(config, classes, input_size, passes: int = 2) -> list:
    dataset = create_dataset(config.data, "train", classes.class_ids, input_size, True, output="float")
    items = []
    for _ in range(passes):
        for i in range(len(dataset)):
            clip, target = dataset[i]
            items.append((clip.half(), {"boxes": target["boxes"], "labels": target["labels"]}))
    return items


def matching_stats(outputs: dict, targets: list, indices: list) -> tuple[float, float]:
    _, grid_h, grid_w = outputs["token_grid"]
    p_actor = outputs["pred_actor"].softmax(-1)[..., 0]
    own, ranks = [], []
    for b, (pred_idx, tgt_idx) in enumerate(indices):
        # The candidates are one time slice, so a candidate's index is its cell's row-major index.
        own += (grid_cell_index(targets[b]["boxes"][tgt_idx, :2], grid_h, grid_w) == pred_idx).tolist()
        ranks += [int((p_actor[b] > p_actor[b, p]).sum()) for p in pred_idx]
    return sum(own) / max(len(own), 1), sum(ranks) / max(len(ranks), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--max-steps", type=int, default=0, help="0 = until --minutes")
    parser.add_argument("--schedule-steps", type=int, default=2000, help="length of the cosine schedule in steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/diagnose")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.config, args.overrides)
    torch.manual_seed(config.train.seed)
    classes = read_class_info(config.data)
    model = create_model_from_config(config.model, len(classes.class_ids))
    criterion = create_criterion(config.matcher, config.loss, len(classes.class_ids))
    items = preload(config, classes, model.input_size)
    batch = config.train.batch_size
    steps_per_epoch = len(items) // 2 // batch
    optimizer = create_optimizer(model, config.optim)
    scheduler = create_scheduler(optimizer, config.optim, steps_per_epoch, max(1, args.schedule_steps // steps_per_epoch))
    generator = torch.Generator().manual_seed(config.train.seed)
    history: dict[str, list[float]] = {}
    start, step, done = time.time(), 0, False
    model.train()
    while not done:
        order = torch.randperm(len(items), generator=generator)
        for first in range(0, len(items) - batch + 1, batch):
            chosen = [items[k] for k in order[first:first + batch]]
            clips = torch.stack([clip for clip, _ in chosen]).float()
            targets = [target for _, target in chosen]
            outputs = model(clips)
            indices = criterion.match(outputs, targets)
            losses = criterion(outputs, targets, indices)
            optimizer.zero_grad()
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.clip_grad)
            optimizer.step()
            scheduler.step()
            step += 1
            with torch.no_grad():
                own, rank = matching_stats(outputs, targets, indices)
            for name, value in losses.items():
                history.setdefault(name, []).append(float(value.detach()) / criterion.weight_dict.get(name, 1.0))
            history.setdefault("own_cell", []).append(own)
            history.setdefault("actor_rank", []).append(rank)
            if step % 50 == 0:
                means = " ".join(f"{k}={sum(v[-50:]) / 50:.3f}" for k, v in history.items())
                print(f"step {step} {time.time() - start:.0f}s lr={optimizer.param_groups[-1]['lr']:.1e} {means}",
                      flush=True)
            done = time.time() - start > 60 * args.minutes or step == args.max_steps
            if done:
                break
    print(f"{step} steps, {step * batch / (time.time() - start):.1f} clips/s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_model(out / "model.safetensors", model, {**model_metadata(model, config, classes), "steps": step})
    result = evaluate_model(model.eval(), classes, config.data, config.eval, out, torch.device("cpu"))
    print(f"mAP: {result.get('mAP')}")


if __name__ == "__main__":
    main()
