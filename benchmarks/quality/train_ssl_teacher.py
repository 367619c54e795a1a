"""Train the quality benchmark's self-supervised teacher: a small HuBERT, from scratch, by masked
prediction of k-means clusters of MFCC features, on the benchmark's unlabelled TTS speech.

Users prune self-supervised encoders. A masked-prediction model must fill masked frames in from
their context, so its attention carries that context; the CTC teacher (train_teacher.py) mostly
needs local evidence, and a student of it can drop every attention head for free. This teacher
is the one on which the method's head pruning has something to keep.

HuBERT's first iteration, small:
- targets: k-means (``--clusters``, 100) on 39 MFCC features (13 + deltas + delta-deltas, mean
  normalised per utterance), one per 20 ms model frame: 25 ms windows at the CNN's stride, so
  frame i of the labels is frame i of the model;
- span masking: every frame starts a masked span of ``--mask-length`` (10) frames with probability
  ``--mask-start`` (0.08), about half of all frames masked; masked frames get the model's learned
  mask embedding after the feature projection;
- the loss: cross-entropy of a linear head over the clusters, on masked frames only.

The audio is every training speaker's unlabelled passage (corpus/) and sentence (sentences/train;
their phones are not read): 100 minutes. The held-out speakers' sentences measure masked-frame
accuracy, with and without attention (every layer's attention output zeroed), in teacher.json.
It is saved as a stock ``transformers`` ``HubertModel`` (the head is left out; ``head.safetensors``
keeps it for the accuracy), Large style: pre-LN, layer-norm CNN, which trains from scratch
without warm-up tricks. The default size (4 layers of 256, 4 heads, FFN 1024, a CNN 128 wide;
3.5 M parameters) trains in well under an hour on one CPU thread; its CNN makes about half of the
MACs, as wav2vec 2.0 Base's makes a third, so pruning for speed has both parts to weigh.

The positional convolution spans 16 frames (+-160 ms), not the stock 128 (+-1.28 s). With 128,
a first recipe (otherwise the same) learned to fill masked frames in from the convolution: with
every attention output zeroed its masked-frame accuracy fell only from 8.4 % to 7.2 %, and its
probes by 1.9 keyword points and 1.5 PER points, no more than the CTC teacher's. A 16-frame kernel
still gives each frame its relative position and neighbours, but context beyond 160 ms, which
masked runs of 10 frames and more need, must come through attention.

HuBERT's second iteration: ``--targets-from FOLDER --targets-layer K`` clusters hidden state K of an
earlier teacher instead of MFCC features. Measured on the default teacher's state 2, it makes a
model whose task needs attention far more (masked-frame accuracy 13.2 %, 1.2 % without attention)
but whose probes fall (keywords 52.6 %, PER 98.1 %): docs/quality-benchmark.md, section 6.

    python benchmarks/quality/train_ssl_teacher.py --data work/data --out work/ssl-teacher

Deterministic for a seed on one device and thread count.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import transformers
from safetensors.torch import save_file
from train_teacher import encoder_fields, run_trainer, write_teacher

SAMPLING_RATE = 16000
FRAME_HOP = 320  # samples per model frame: the product of the CNN's strides (20 ms)
FRAME_WINDOW = 400  # the CNN's receptive field (25 ms): MFCC windows cover exactly one model frame


def teacher_config(*, hidden: int, layers: int, heads: int, ffn: int, conv: int,
                   pos_conv: int) -> transformers.HubertConfig:
    """HuBERT Large style (pre-LN, layer-norm CNN), no dropout (train_teacher.encoder_fields). The trainer
    passes its own masks; the config's ``mask_time_prob`` only makes transformers build the mask embedding."""
    return transformers.HubertConfig(**encoder_fields(hidden=hidden, layers=layers, heads=heads, ffn=ffn, conv=conv,
                                                      pos_conv=pos_conv))


# --- targets: MFCC features and their k-means clusters ------------------------------------------


def mel_filters(bins: int, fft: int) -> torch.Tensor:
    """(bins, fft // 2 + 1) triangular mel filters from 20 Hz to the Nyquist frequency."""
    def mel(hz):
        return 2595 * np.log10(1 + hz / 700)

    edges_mel = np.linspace(mel(20.0), mel(SAMPLING_RATE / 2), bins + 2)
    edges = 700 * (10 ** (edges_mel / 2595) - 1) / (SAMPLING_RATE / 2) * (fft // 2)  # in FFT bins
    grid = np.arange(fft // 2 + 1)[None, :]
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (grid - lower) / (centre - lower)
    falling = (upper - grid) / (upper - centre)
    return torch.from_numpy(np.clip(np.minimum(rising, falling), 0, None)).float()


def mfcc(wave: np.ndarray, filters: torch.Tensor, dct: torch.Tensor) -> torch.Tensor:
    """(T', 39) features of one waveform, one row per model frame: 13 cepstra, deltas and
    delta-deltas, mean normalised over the utterance."""
    x = torch.from_numpy(wave)
    x = torch.cat([x[:1], x[1:] - 0.97 * x[:-1]])  # pre-emphasis
    frames = x.unfold(0, FRAME_WINDOW, FRAME_HOP) * torch.hamming_window(FRAME_WINDOW, periodic=False)  # (T', 400)
    power = torch.fft.rfft(frames, n=512).abs() ** 2  # (T', 257)
    cepstra = torch.log(power @ filters.T + 1e-6) @ dct.T  # (T', 13)
    delta = _delta(cepstra)
    features = torch.cat([cepstra, delta, _delta(delta)], dim=1)
    return features - features.mean(0)


def _delta(x: torch.Tensor, width: int = 2) -> torch.Tensor:
    """The regression slope over +-``width`` frames, edges repeated (as Kaldi and HTK compute it)."""
    padded = torch.cat([x[:1].expand(width, -1), x, x[-1:].expand(width, -1)])
    length = len(x)
    slope = sum(k * (padded[width + k: width + k + length] - padded[width - k: width - k + length])
                for k in range(1, width + 1))
    return slope / (2 * sum(k * k for k in range(1, width + 1)))


def dct_matrix(coefficients: int, bins: int) -> torch.Tensor:
    """(coefficients, bins) orthonormal DCT-II."""
    n = torch.arange(bins).float()
    k = torch.arange(coefficients).float()[:, None]
    matrix = torch.cos(math.pi / bins * (n + 0.5) * k) * math.sqrt(2 / bins)
    matrix[0] /= math.sqrt(2)
    return matrix


def kmeans(points: torch.Tensor, clusters: int, *, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """(clusters, D) centroids by k-means++ seeding and Lloyd iterations, on standardised points."""
    first = torch.randint(len(points), (1,), generator=generator)
    centroids = [points[first]]
    nearest = torch.cdist(points, centroids[0]).squeeze(1) ** 2  # (N,) squared distance to the closest centroid
    for _ in range(clusters - 1):
        chosen = torch.multinomial(nearest / nearest.sum(), 1, generator=generator)
        centroids.append(points[chosen])
        nearest = torch.minimum(nearest, torch.cdist(points, points[chosen]).squeeze(1) ** 2)
    centroids = torch.cat(centroids)
    for _ in range(iterations):
        assignment = torch.cdist(points, centroids).argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, points)
        counts = torch.bincount(assignment, minlength=clusters).clamp(min=1)
        centroids = torch.where(counts[:, None] > 0, sums / counts[:, None], centroids)
    return centroids


def mfcc_features(waves: list[np.ndarray]) -> list[torch.Tensor]:
    """HuBERT's first-iteration features: (T', 39) MFCC rows per waveform."""
    filters, dct = mel_filters(40, 512), dct_matrix(13, 40)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of small transforms: threads only add overhead
    features = [mfcc(w, filters, dct) for w in waves]
    torch.set_num_threads(threads)
    return features


@torch.inference_mode()
def model_features(waves: list[np.ndarray], teacher: Path, layer: int) -> list[torch.Tensor]:
    """HuBERT's second-iteration features: (T', D) hidden state ``layer`` of an earlier teacher, one
    utterance at a time with nothing masked. Its CNN frames are the MFCC frames (400-sample receptive
    field, 320-sample hop), so label i is still model frame i."""
    model = transformers.HubertModel.from_pretrained(teacher).eval()
    if not 0 <= layer <= model.config.num_hidden_layers:
        raise SystemExit(f"error: --targets-layer {layer} is not a hidden state of {teacher} "
                         f"(0..{model.config.num_hidden_layers})")
    features = [model(torch.from_numpy(w)[None], output_hidden_states=True).hidden_states[layer][0] for w in waves]
    for wave, rows in zip(waves, features):
        if len(rows) != (len(wave) - FRAME_WINDOW) // FRAME_HOP + 1:
            raise SystemExit(f"error: {teacher} makes {len(rows)} frames of {len(wave)} samples, not one per "
                             f"{FRAME_HOP}-sample hop; its CNN must be wav2vec 2.0's")
    return features


def cluster_targets(features: list[torch.Tensor], test_features: list[torch.Tensor], clusters: int, seed: int):
    """(per-utterance label tensors of the training audio, of the test audio, k-means summary), from
    k-means on 100,000 standardised training frames of ``features``."""
    stacked = torch.cat(features)
    mean, std = stacked.mean(0), stacked.std(0) + 1e-6
    generator = torch.Generator().manual_seed(seed)
    sample = stacked[torch.randperm(len(stacked), generator=generator)[:100_000]]
    centroids = kmeans((sample - mean) / std, clusters, iterations=40, generator=generator)

    def label(feats):
        return [torch.cdist((f - mean) / std, centroids).argmin(1) for f in feats]

    labels, test_labels = label(features), label(test_features)
    used = torch.bincount(torch.cat(labels), minlength=clusters)
    share = used.float() / used.sum()
    summary = {"clusters": clusters, "frames": len(stacked), "clusters_used": int((used > 0).sum()),
               "target_entropy_nats": round(float(-(share[share > 0] * share[share > 0].log()).sum()), 3)}
    return labels, test_labels, summary


def targets(waves, test_waves, args):
    """The k-means labels of the iteration ``args`` asks for: MFCC (iteration 1), or with
    ``--targets-from`` an earlier teacher's hidden state ``--targets-layer`` (iteration 2)."""
    if args.targets_from:
        teacher = Path(args.targets_from)
        features = model_features(waves, teacher, args.targets_layer)
        test_features = model_features(test_waves, teacher, args.targets_layer)
        source = f"hidden state {args.targets_layer} of {teacher.name} (HuBERT iteration 2)"
    else:
        features, test_features = mfcc_features(waves), mfcc_features(test_waves)
        source = "MFCC (HuBERT iteration 1)"
    labels, test_labels, summary = cluster_targets(features, test_features, args.clusters, args.seed)
    return labels, test_labels, {"features": source, **summary}


# --- data ----------------------------------------------------------------------------------------


def read_wave(path: Path) -> np.ndarray:
    """A waveform normalised to zero mean and unit variance (what do_normalize does)."""
    wave, rate = sf.read(path, dtype="float32")
    if rate != SAMPLING_RATE:
        raise SystemExit(f"error: {path} is {rate} Hz, expected {SAMPLING_RATE}; regenerate the data")
    return (wave - wave.mean()) / (wave.std() + 1e-7)


def read_audio(data: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(training speakers' passages and sentences, held-out speakers' sentences)."""
    train = [read_wave(p) for p in sorted((data / "corpus").rglob("*.wav"))]
    for split in ("train", "test"):
        waves = [read_wave(data / json.loads(line)["path"])
                 for line in (data / "sentences" / f"{split}.jsonl").read_text().splitlines()]
        if split == "train":
            train += waves
        else:
            test = waves
    return train, test


def span_mask(frames: int, start_probability: float, length: int, rng: np.random.Generator) -> np.ndarray:
    """(frames,) bool: every frame starts a masked span of ``length`` with ``start_probability``;
    at least one span."""
    starts = np.flatnonzero(rng.random(frames) < start_probability)
    if len(starts) == 0:
        starts = rng.integers(frames, size=1)
    mask = np.zeros(frames + length, dtype=bool)
    for start in starts:
        mask[start: start + length] = True
    return mask[:frames]


def crop_batch(waves, labels, eligible: np.ndarray, args, rng: np.random.Generator):
    """(waveforms (B, S), labels (B, T'), mask (B, T')) of ``args.batch`` random crops, each starting on a
    frame boundary so that label i is the model's frame i."""
    crop_frames = int(args.crop_seconds * SAMPLING_RATE) // FRAME_HOP
    samples = (crop_frames - 1) * FRAME_HOP + FRAME_WINDOW  # exactly crop_frames model frames
    chosen = rng.choice(eligible, size=args.batch)
    batch_waves, batch_labels, batch_masks = [], [], []
    for i in chosen:
        first = int(rng.integers(len(labels[i]) - crop_frames + 1))
        batch_waves.append(torch.from_numpy(waves[i][first * FRAME_HOP: first * FRAME_HOP + samples]))
        batch_labels.append(labels[i][first: first + crop_frames])
        batch_masks.append(torch.from_numpy(span_mask(crop_frames, args.mask_start, args.mask_length, rng)))
    return torch.stack(batch_waves), torch.stack(batch_labels), torch.stack(batch_masks)


# --- evaluation ----------------------------------------------------------------------------------


@contextlib.contextmanager
def attention_removed(model: transformers.HubertModel):
    """Every layer's attention output zeroed (its out_proj bias too): the residual branch is the identity."""
    handles = [layer.attention.register_forward_hook(lambda _m, _a, out: (torch.zeros_like(out[0]), *out[1:]))
               for layer in model.encoder.layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.inference_mode()
def masked_accuracy(model, head, waves, labels, args, seed: int = 0) -> dict:
    """Accuracy of the cluster prediction on masked frames (and on unmasked ones), one utterance at a
    time with masks drawn from ``seed``: the same masks for every model and every call."""
    model.eval()
    rng = np.random.default_rng(seed)
    hits = {"masked": 0, "unmasked": 0}
    counts = {"masked": 0, "unmasked": 0}
    for wave, target in zip(waves, labels):
        mask = torch.from_numpy(span_mask(len(target), args.mask_start, args.mask_length, rng))[None]
        hidden = model(torch.from_numpy(wave)[None], mask_time_indices=mask).last_hidden_state[0]  # (T', D)
        correct = head(hidden).argmax(-1) == target
        for name, where in (("masked", mask[0]), ("unmasked", ~mask[0])):
            hits[name] += int(correct[where].sum())
            counts[name] += int(where.sum())
    model.train()
    return {name: round(hits[name] / max(counts[name], 1), 4) for name in hits}


# --- training ------------------------------------------------------------------------------------


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then a cosine decay to 5 % of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(args) -> dict:
    data, out = Path(args.data), Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise SystemExit(f"error: {out} exists and is not empty; pass --overwrite to replace it")
    started = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    waves, test_waves = read_audio(data)
    labels, test_labels, targets_summary = targets(waves, test_waves, args)
    targets_summary["seconds"] = round(time.time() - started, 1)
    crop_frames = int(args.crop_seconds * SAMPLING_RATE) // FRAME_HOP
    eligible = np.array([i for i, lab in enumerate(labels) if len(lab) >= crop_frames])

    config = teacher_config(hidden=args.hidden, layers=args.layers, heads=args.heads, ffn=args.ffn, conv=args.conv,
                            pos_conv=args.pos_conv)
    model = transformers.HubertModel(config).train()
    head = torch.nn.Linear(args.hidden, args.clusters)
    parameters = [*model.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    rng = np.random.default_rng(args.seed)
    warmup = max(1, int(0.08 * args.steps))
    log = []
    print(f"ssl teacher: {sum(p.numel() for p in model.parameters()):,} parameters, {len(waves)} utterances "
          f"({sum(len(w) for w in waves) / SAMPLING_RATE / 60:.1f} min), {args.clusters} clusters "
          f"({targets_summary['clusters_used']} used), {args.steps} steps of {args.batch} x {args.crop_seconds:g} s",
          file=sys.stderr, flush=True)
    for step in range(args.steps):
        batch_waves, batch_labels, batch_masks = crop_batch(waves, labels, eligible, args, rng)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, warmup)
        hidden = model(batch_waves, mask_time_indices=batch_masks).last_hidden_state  # (B, T', D)
        logits = head(hidden[batch_masks])  # (masked frames, clusters)
        loss = torch.nn.functional.cross_entropy(logits, batch_labels[batch_masks])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        entry = {"step": step + 1, "loss": round(float(loss.detach()), 4), "seconds": round(time.time() - started, 1)}
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            entry["test_masked_accuracy"] = masked_accuracy(model, head, test_waves, test_labels, args)["masked"]
        log.append(entry)
        if (step + 1) % 50 == 0 or "test_masked_accuracy" in entry:
            print(json.dumps(entry), file=sys.stderr, flush=True)

    full = masked_accuracy(model, head, test_waves, test_labels, args)
    with attention_removed(model):
        without = masked_accuracy(model, head, test_waves, test_labels, args)
    result = {
        "objective": f"masked prediction of k-means clusters of {targets_summary['features']}",
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": args.steps,
        "train_minutes": round((time.time() - started) / 60, 2),
        "targets": targets_summary,
        "test_masked_accuracy": full["masked"],
        "test_unmasked_accuracy": full["unmasked"],
        "test_masked_accuracy_without_attention": without["masked"],
        "test_unmasked_accuracy_without_attention": without["unmasked"],
        "chance": round(1 / args.clusters, 4),
        "args": vars(args),
    }
    save(model, head, out, log, result)
    return result


def save(model, head, out: Path, log: list[dict], result: dict) -> None:
    """The teacher folder (train_teacher.write_teacher), with the cluster head in ``head.safetensors``."""
    write_teacher(model, out, log, result, lambda tmp: save_file(
        {k: v.contiguous() for k, v in head.state_dict().items()}, tmp / "head.safetensors"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder written by tts_data.py")
    parser.add_argument("--out", required=True, help="model folder to write")
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch", type=int, default=8, help="crops per step")
    parser.add_argument("--crop-seconds", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=8e-4)
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--mask-start", type=float, default=0.08, help="probability that a frame starts a masked span")
    parser.add_argument("--mask-length", type=int, default=10, help="frames per masked span")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--ffn", type=int, default=1024)
    parser.add_argument("--conv", type=int, default=128)
    parser.add_argument("--pos-conv", type=int, default=16,
                        help="kernel of the positional convolution, in frames (stock: 128); see the module docstring")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads: the teacher is bit-identical for one seed and thread count")
    parser.add_argument("--targets-from", help="HuBERT's second iteration: cluster this earlier teacher folder's "
                        "hidden state instead of MFCC features")
    parser.add_argument("--targets-layer", type=int, default=2,
                        help="with --targets-from: the hidden state to cluster (0 = the CNN's)")
    parser.add_argument("--eval-every", type=int, default=500)
    run_trainer(parser, train, argv)


if __name__ == "__main__":
    main()
