"""The "same size, trained from scratch" baseline: a randomly initialised encoder with exactly the
architecture of a shrunk student, distilled from the same teacher on the same unlabelled audio
with the same objective and number of steps as the pruning runs.

If pruning is worth anything, the pruned student must beat this model: both end up with the
same per-layer sizes, only the pruned one started from the teacher's weights.

    python benchmarks/quality/train_scratch.py --like work/models/full-0.72 --teacher work/teacher \\
        --data work/data/corpus --steps 400 --out work/models/scratch-0.72
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from speechprune.folders.shrunk import write_model_folder
from speechprune.io.audio import scan_audio
from speechprune.io.batches import CropSampler
from speechprune.method.distill import DistillHeads, distill_loss
from speechprune.model.encoder import Encoder
from speechprune.model.loading import inspect_model, load_encoder
from speechprune.model.spec import EncoderSpec


def train(args) -> dict:
    like = Path(args.like)
    spec = EncoderSpec.from_dict(json.loads((like / "config.json").read_text())["encoder"])
    preprocessor = json.loads((like / "preprocessor_config.json").read_text())
    teacher = load_encoder(inspect_model(args.teacher)).encoder.eval().requires_grad_(False)
    torch.manual_seed(args.seed)
    student = Encoder(spec).train()
    layers = [int(x) for x in args.distill_layers.split(",")]
    heads = DistillHeads(spec.hidden_size, layers)
    weights = [1.0] * len(layers)
    sampler = CropSampler(scan_audio(args.data, min_seconds=1.0), sample_rate=preprocessor["sampling_rate"],
                          crop_seconds=args.crop_seconds, batch_seconds=args.batch_seconds,
                          normalize=preprocessor["do_normalize"], seed=args.seed)
    use_mask = preprocessor.get("return_attention_mask", True)
    trained = [p for p in student.parameters() if p.requires_grad] + list(heads.parameters())
    optimizer = torch.optim.AdamW(trained, lr=args.lr, weight_decay=0.0)
    warmup = max(1, args.steps // 10)
    started = time.time()
    for step in range(args.steps):
        for group in optimizer.param_groups:  # warm-up, then cosine decay: the best shot a from-scratch model gets
            progress = max(0.0, (step - warmup) / max(1, args.steps - warmup))
            group["lr"] = args.lr * min((step + 1) / warmup, 0.5 * (1 + math.cos(math.pi * progress)))
        batch = sampler.batch(step)
        mask = batch.attention_mask if use_mask else None
        with torch.no_grad():
            target = teacher.encode(batch.waveforms, mask).hidden_states
        got = student.encode(batch.waveforms, mask)
        frame_mask = got.frame_mask
        loss, _ = distill_loss(got.hidden_states, target, heads, weights, frame_mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 10.0)
        optimizer.step()
        if (step + 1) % 25 == 0:
            print(json.dumps({"step": step + 1, "loss": round(float(loss.detach()), 4),
                              "seconds": round(time.time() - started, 1)}), file=sys.stderr, flush=True)
    params = sum(p.numel() for p in student.parameters())
    write_model_folder(
        Path(args.out), spec, {k: v.detach() for k, v in student.state_dict().items()}, dtype="float32",
        card="# From-scratch baseline\n\nSame architecture as the pruned student it is compared with, random init, "
             "distilled from the teacher on the same audio.\n",
        provenance={"baseline": "scratch", "like": str(like), "teacher": str(args.teacher), "params": params,
                    "steps": args.steps, "seed": args.seed},
        preprocessor=preprocessor,
        overwrite=args.overwrite,
    )
    return {"params": params, "steps": args.steps, "final_loss": round(float(loss.detach()), 4),
            "minutes": round((time.time() - started) / 60, 2)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--like", required=True, help="shrunk model folder whose architecture to copy")
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--data", required=True, help="unlabelled audio folder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--distill-layers", required=True, help="the pruning runs' distilled hidden states, e.g. 0,3,6")
    parser.add_argument("--crop-seconds", type=float, default=2.0)
    parser.add_argument("--batch-seconds", type=float, default=16.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps(train(args)))


if __name__ == "__main__":
    main()
