"""Train the quality benchmark's teacher: a small wav2vec 2.0 encoder with a linear CTC phone head,
from scratch, on the generated TTS sentences (benchmarks/quality/tts_data.py).

The teacher must have learned something for pruning to have something to lose: CTC on phones
gives its layers phonetic structure, and its phone error rate on held-out speakers says how much.
It is saved with ``save_pretrained`` (Wav2Vec2ForCTC + feature-extractor config), so
``speechprune prune`` takes it like any hub checkpoint (the CTC head is left out).

    python benchmarks/quality/train_teacher.py --data work/data --out work/teacher --steps 800

Deterministic for a seed on one device and thread count.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import transformers

from speechprune.eval.probe import edit_distance, greedy_decode

SAMPLING_RATE = 16000


def teacher_config(tokens: int, *, hidden: int, layers: int, heads: int, ffn: int, conv: int) -> transformers.Wav2Vec2Config:
    """Large-style (pre-LN, layer-norm CNN) wav2vec 2.0: it trains from scratch without warm-up tricks."""
    return transformers.Wav2Vec2Config(
        **encoder_fields(hidden=hidden, layers=layers, heads=heads, ffn=ffn, conv=conv, pos_conv=128),
        vocab_size=tokens + 1,  # CTC blank = pad_token_id 0, phones 1..tokens
        pad_token_id=0,
        ctc_loss_reduction="mean",
        ctc_zero_infinity=True,
        mask_time_length=5,
    )


def encoder_fields(*, hidden: int, layers: int, heads: int, ffn: int, conv: int, pos_conv: int) -> dict:
    """The config fields both teachers share: Large style (pre-LN, a LayerNorm in every conv layer), seven
    conv layers of ``conv`` channels, no dropout, no layer drop; masking at 5 % (the CTC teacher's light
    SpecAugment; the SSL trainer passes its own masks, and needs the mask embedding it makes)."""
    return dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        conv_dim=(conv,) * 7,
        conv_bias=True,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=pos_conv,
        num_conv_pos_embedding_groups=16,
        mask_time_prob=0.05,
        layerdrop=0.0,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        final_dropout=0.0,
    )


def read_split(data: Path, split: str, phone_index: dict[str, int]) -> list[tuple[np.ndarray, list[int]]]:
    """(normalised waveform, phone ids 1..P) per sentence of ``sentences/<split>.jsonl``."""
    items = []
    for line in (data / "sentences" / f"{split}.jsonl").read_text().splitlines():
        entry = json.loads(line)
        wave, rate = sf.read(data / entry["path"], dtype="float32")
        if rate != SAMPLING_RATE:
            raise SystemExit(f"error: {entry['path']} is {rate} Hz, expected {SAMPLING_RATE}; regenerate the data")
        wave = (wave - wave.mean()) / (wave.std() + 1e-7)  # what do_normalize does
        items.append((wave, [phone_index[p] + 1 for p in entry["phones"]]))
    return items


def length_batches(items, batch_seconds: float, rng: np.random.Generator) -> list[list[int]]:
    """Batches of similar-length sentences, about ``batch_seconds`` of audio each, in random order."""
    order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
    batches, current, longest = [], [], 0
    for i in order:
        longest_if_added = max(longest, len(items[i][0]))
        if current and longest_if_added * (len(current) + 1) > batch_seconds * SAMPLING_RATE:
            batches.append(current)
            current, longest_if_added = [], len(items[i][0])
        current.append(i)
        longest = longest_if_added
    if current:
        batches.append(current)
    return [batches[j] for j in rng.permutation(len(batches))]


def collate(items, indices: list[int]):
    """(waveforms (B, T), attention mask (B, T), labels (B, U) padded with -100)."""
    length = max(len(items[i][0]) for i in indices)
    width = max(len(items[i][1]) for i in indices)
    waves = torch.zeros(len(indices), length)
    mask = torch.zeros(len(indices), length, dtype=torch.long)
    labels = torch.full((len(indices), width), -100, dtype=torch.long)
    for row, i in enumerate(indices):
        wave, ids = items[i]
        waves[row, : len(wave)] = torch.from_numpy(wave)
        mask[row, : len(wave)] = 1
        labels[row, : len(ids)] = torch.tensor(ids)
    return waves, mask, labels


@torch.inference_mode()
def phone_error_rate(model, items, batch_seconds: float, device) -> float:
    model.eval()
    errors = total = 0
    for indices in length_batches(items, batch_seconds, np.random.default_rng(0)):
        waves, mask, _ = collate(items, indices)
        logits = model(waves.to(device), attention_mask=mask.to(device)).logits  # (B, T', P + 1)
        frames = model._get_feat_extract_output_lengths(mask.sum(-1))
        for i, decoded in zip(indices, greedy_decode(logits, frames, blank=0)):
            errors += edit_distance(decoded, items[i][1])
            total += len(items[i][1])
    model.train()
    return errors / max(total, 1)


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up, the peak held, then a linear decay to 5 % over the last quarter.

    CTC from scratch first sits on an all-blank plateau; a short budget is best spent at the
    peak rate until it breaks (a cosine decay over 500 steps left the phone error rate at 0.76).
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    decay_start = int(0.75 * steps)
    if step < decay_start:
        return peak
    return peak * (1 - 0.95 * (step - decay_start) / max(1, steps - decay_start))


def train(args) -> dict:
    data, out = Path(args.data), Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise SystemExit(f"error: {out} exists and is not empty; pass --overwrite to replace it")
    phones = json.loads((data / "phones.json").read_text())
    phone_index = {p: i for i, p in enumerate(phones)}
    train_items = read_split(data, "train", phone_index)
    test_items = read_split(data, "test", phone_index)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    config = teacher_config(len(phones), hidden=args.hidden, layers=args.layers, heads=args.heads, ffn=args.ffn,
                            conv=args.conv)
    model = transformers.Wav2Vec2ForCTC(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    rng = np.random.default_rng(args.seed)
    queue: list[list[int]] = []
    log, started = [], time.time()
    warmup = max(1, int(0.08 * args.steps))
    print(f"teacher: {sum(p.numel() for p in model.parameters()):,} parameters, {len(train_items)} train sentences "
          f"({sum(len(w) for w, _ in train_items) / SAMPLING_RATE / 60:.1f} min), {args.steps} steps", file=sys.stderr)
    for step in range(args.steps):
        if not queue:
            queue = length_batches(train_items, args.batch_seconds, rng)
        waves, mask, labels = collate(train_items, queue.pop())
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, warmup)
        loss = model(waves.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        entry = {"step": step + 1, "loss": round(float(loss.detach()), 4), "seconds": round(time.time() - started, 1)}
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            entry["test_per"] = round(phone_error_rate(model, test_items, args.batch_seconds, device), 4)
        log.append(entry)
        if (step + 1) % 25 == 0 or "test_per" in entry:
            print(json.dumps(entry), file=sys.stderr, flush=True)

    result = {
        "phones": len(phones),
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": args.steps,
        "train_minutes": round((time.time() - started) / 60, 2),
        "test_per": log[-1]["test_per"],
        "train_per": round(phone_error_rate(model, train_items[:200], args.batch_seconds, device), 4),
        "args": vars(args),
    }
    save(model, out, phones, log, result)
    return result


def save(model, out: Path, phones: list[str], log: list[dict], result: dict) -> None:
    write_teacher(model, out, log, result, lambda tmp: (tmp / "phones.json").write_text(json.dumps(phones) + "\n"))


def write_teacher(model, out: Path, log: list[dict], result: dict, write_more=None) -> None:
    """A teacher folder: the model and the feature-extractor config every speechprune command reads, the
    training log, ``teacher.json`` (``result``) and what ``write_more(folder)`` adds. Written next to
    ``out`` and renamed into place, so a half-written teacher never exists."""
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.cpu().eval().save_pretrained(tmp)
    transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLING_RATE, padding_value=0.0,
                                          do_normalize=True, return_attention_mask=True).save_pretrained(tmp)
    if write_more is not None:
        write_more(tmp)
    (tmp / "training_log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log))
    (tmp / "teacher.json").write_text(json.dumps(result, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder written by tts_data.py")
    parser.add_argument("--out", required=True, help="model folder to write")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-seconds", type=float, default=16.0)
    parser.add_argument("--lr", type=float, default=3e-4)  # 1e-3 and 2e-3 stay on the blank plateau far longer
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--ffn", type=int, default=1536)
    parser.add_argument("--conv", type=int, default=256)
    parser.add_argument("--eval-every", type=int, default=150)
    parser.add_argument("--device", default="cpu")
    run_trainer(parser, train, argv)


def run_trainer(parser: argparse.ArgumentParser, trainer, argv=None) -> None:
    """A teacher script's end: --seed and --overwrite added to its options, the teacher trained, its
    result (all but the arguments) printed as JSON on stdout."""
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    result = trainer(parser.parse_args(argv))
    print(json.dumps({k: v for k, v in result.items() if k != "args"}))


if __name__ == "__main__":
    main()
