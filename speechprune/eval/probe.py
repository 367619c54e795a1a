"""SUPERB-style probes: how much a frozen encoder's hidden states say about a labelled task.

The encoder is frozen and run once over the audio (``features``): every hidden state (0 =
input of layer 1, k = output of layer k), layer-normed per frame (no affine). A probe learns
softmax weights over the L + 1 states (initialised uniform) and a linear head on their
weighted sum, as the SUPERB benchmark's weighted-sum protocol does (Yang et al. 2021), with
the downstream model cut to one linear layer:

* ``fit_classifier``: utterance classes (keywords, speakers) from features mean-pooled over
  real frames, cross-entropy;
* ``fit_ctc``: phone sequences from per-frame features, CTC with greedy decoding, scored as
  phone error rate (PER).

Probes are trained on the CPU (or ``device``) from seeded initial weights and a seeded batch
order, so the same inputs and seed give the same numbers. This module is library code: it
knows nothing of the command line.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

FULL_BATCH_MAX = 4096  # fit_classifier: full-batch Adam up to this many clips, minibatches of 256 above
MINIBATCH = 256
SMALL_STEP = 1 << 20  # feature values per training step below which CPU probes train on one thread


@contextmanager
def _one_thread_if_small(step_values: int, device: torch.device) -> Iterator[None]:
    """Train small probes on one CPU thread: their steps are too small to split, and the other
    threads' waiting made them 5-100x slower on a busy 2-core machine (measured)."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or step_values >= SMALL_STEP or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _WeightedSum(torch.nn.Module):
    """softmax(w) over the stacked states -> a linear layer; w starts at 0 (uniform weights)."""

    def __init__(self, states: int, width: int, outputs: int, generator: torch.Generator):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(states))
        bound = width ** -0.5  # nn.Linear's default range, drawn from the seeded generator
        self.linear = torch.nn.Linear(width, outputs)
        with torch.no_grad():
            self.linear.weight.copy_(torch.rand(outputs, width, generator=generator) * 2 * bound - bound)
            self.linear.bias.zero_()

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.w, 0)  # (S,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., S, D) -> (..., outputs)
        mixed = torch.einsum("s,...sd->...d", self.weights(), x)  # (..., D)
        return self.linear(mixed)

    def optimizer(self, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        # weight decay on the linear weight only: not on the bias, nor on the layer weights
        return torch.optim.Adam([
            {"params": [self.linear.weight], "weight_decay": weight_decay},
            {"params": [self.linear.bias, self.w], "weight_decay": 0.0},
        ], lr=lr)


@dataclass
class ClassifierProbe:
    accuracy: float  # on the test clips
    train_accuracy: float
    chance: float  # accuracy on the test clips of always answering the most common training class
    layer_weights: list[float]  # softmax(w), one per hidden state
    classes: list[str]
    confusion: list[list[int]] = field(default_factory=list)  # [true class][predicted class], test clips

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "train_accuracy": self.train_accuracy, "chance": self.chance,
                "layer_weights": self.layer_weights, "classes": self.classes, "confusion": self.confusion}


def _as_tensor(x, name: str) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x, dtype=np.float32))
    if x.ndim != 3:
        raise ValueError(f"{name} must be (N, L + 1, D) pooled features, got shape {tuple(x.shape)}")
    return x


def _labels(y, n: int, classes: int, name: str) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(y, dtype=np.int64))
    if y.shape != (n,):
        raise ValueError(f"{name} must hold one label per clip ({n}), got shape {tuple(y.shape)}")
    if n and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise ValueError(f"{name} must be class indices in [0, {classes}), got {int(y.min())}..{int(y.max())}")
    return y


def fit_classifier(
    train_x,
    train_y,
    test_x,
    test_y,
    *,
    classes: list[str],
    seed: int = 0,
    epochs: int = 200,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    device="cpu",
) -> ClassifierProbe:
    """Train softmax layer weights + a linear head on pooled features; score it on the test clips.

    train_x, test_x: (N, L + 1, D) from ``FrozenFeatures.pooled``; train_y, test_y: class indices into
    ``classes``. Cross-entropy, Adam: full batch (one step per epoch) up to 4,096 clips, else
    minibatches of 256 in a seeded order. The initial head and the batch order come from
    ``torch.Generator().manual_seed(seed)``.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    n_classes = len(classes)
    generator = torch.Generator().manual_seed(seed)
    device = torch.device(device)
    n, *sizes = np.shape(train_x)
    step_values = (MINIBATCH if n > FULL_BATCH_MAX else n) * int(np.prod(sizes))  # feature values per step
    with torch.inference_mode(False), torch.enable_grad(), _one_thread_if_small(step_values, device):
        # (inference_mode off: trainable even when called under inference_mode)
        x, test = _as_tensor(train_x, "train_x"), _as_tensor(test_x, "test_x")  # (N, S, D), (M, S, D)
        y = _labels(train_y, x.shape[0], n_classes, "train_y")  # (N,)
        test_labels = _labels(test_y, test.shape[0], n_classes, "test_y")  # (M,)
        if x.shape[0] == 0:
            raise ValueError("no training clips")
        if test.shape[0] and test.shape[1:] != x.shape[1:]:
            raise ValueError(f"test_x has states x width {tuple(test.shape[1:])}, train_x {tuple(x.shape[1:])}")
        head = _WeightedSum(x.shape[1], x.shape[2], n_classes, generator).to(device)
        x_dev, y_dev = x.to(device), y.to(device)
        _train_classifier(head, head.optimizer(lr, weight_decay), x_dev, y_dev, epochs, generator)
        with torch.no_grad():
            train_predicted = _predict(head, x_dev)
            test_predicted = _predict(head, test.to(device)) if test.shape[0] else torch.zeros(0, dtype=torch.long)
            weights = head.weights().cpu()
    return _classifier_probe(classes, y, train_predicted, test_labels, test_predicted, weights)


def _train_classifier(head: _WeightedSum, optimizer, x: torch.Tensor, y: torch.Tensor, epochs: int,
                      generator: torch.Generator) -> None:
    """Cross-entropy on (N, S, D) features ``x`` and labels ``y`` (N,): one full-batch step per
    epoch up to FULL_BATCH_MAX clips, else minibatches in an order drawn from ``generator``."""
    n = x.shape[0]
    for _ in range(epochs):
        if n <= FULL_BATCH_MAX:
            steps = [None]
        else:
            order = torch.randperm(n, generator=generator)
            steps = [order[start : start + MINIBATCH].to(x.device) for start in range(0, n, MINIBATCH)]
        for rows in steps:
            inputs, targets = (x, y) if rows is None else (x[rows], y[rows])
            loss = F.cross_entropy(head(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def _classifier_probe(classes: list[str], train_labels: torch.Tensor, train_predicted: torch.Tensor,
                      test_labels: torch.Tensor, test_predicted: torch.Tensor, weights: torch.Tensor) -> ClassifierProbe:
    """The probe's scores: accuracies, the majority class's share of the test clips (chance), the
    test confusion matrix (rows: true class), the layer weights."""
    n_classes = len(classes)
    confusion = torch.zeros(n_classes, n_classes, dtype=torch.long)
    for true, got in zip(test_labels.tolist(), test_predicted.tolist()):
        confusion[true, got] += 1
    majority = int(torch.bincount(train_labels, minlength=n_classes).argmax())
    m = max(test_labels.shape[0], 1)
    return ClassifierProbe(
        accuracy=round(float((test_predicted == test_labels).sum()) / m, 6),
        train_accuracy=round(float((train_predicted == train_labels).float().mean()), 6),
        chance=round(float((test_labels == majority).sum()) / m, 6),
        layer_weights=[round(float(v), 6) for v in weights],
        classes=list(classes),
        confusion=confusion.tolist(),
    )


def _predict(head: _WeightedSum, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([head(x[start : start + MINIBATCH]).argmax(-1).cpu() for start in range(0, x.shape[0], MINIBATCH)])


@dataclass
class CtcProbe:
    per: float  # phone error rate on the test sequences: errors / reference_phones
    layer_weights: list[float]  # softmax(w), one per hidden state
    errors: int  # total edit distance, greedy decoding vs reference, test sequences
    reference_phones: int
    train_per: float | None = None
    blank: int = 0  # the index of the CTC blank: ``tokens``

    def to_dict(self) -> dict:
        return {"per": self.per, "train_per": self.train_per, "layer_weights": self.layer_weights,
                "errors": self.errors, "reference_phones": self.reference_phones, "blank": self.blank}


def _pad_frames(feats: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T_max, S, D) float32 zero-padded, and the lengths (B,), from (S, T_i, D) arrays."""
    lengths = torch.tensor([f.shape[1] for f in feats], dtype=torch.long)
    states, width = feats[0].shape[0], feats[0].shape[2]
    out = torch.zeros(len(feats), int(lengths.max()), states, width)
    for row, f in enumerate(feats):
        out[row, : f.shape[1]] = torch.from_numpy(np.asarray(f, dtype=np.float32)).transpose(0, 1)  # (T_i, S, D)
    return out, lengths


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int) -> list[list[int]]:
    """CTC best path per sequence of (B, T, tokens) scores: argmax per frame, repeats collapsed, blanks dropped."""
    best = log_probs.argmax(-1).cpu()  # (B, T)
    decoded = []
    for row, length in enumerate(lengths.tolist()):
        path, previous = [], None
        for token in best[row, :length].tolist():
            if token != previous and token != blank:
                path.append(token)
            previous = token
        decoded.append(path)
    return decoded


def fit_ctc(
    train_feats: list[np.ndarray],
    train_labels: list[list[int]],
    test_feats: list[np.ndarray],
    test_labels: list[list[int]],
    *,
    tokens: int,
    seed: int = 0,
    epochs: int = 40,
    lr: float = 2e-3,
    batch_size: int = 16,
    device="cpu",
) -> CtcProbe:
    """Train softmax layer weights + a linear layer to ``tokens + 1`` outputs with CTC; PER on the test set.

    feats: per sequence (L + 1, T, D) from ``FrozenFeatures.frames``; labels: phone indices in
    [0, tokens). The blank is index ``tokens`` (the last output), so phone indices stay as
    given. Adam over minibatches of ``batch_size`` sequences in a seeded order; sequences too
    short for their labels add no loss (``zero_infinity``). Decoding is greedy: argmax per frame,
    repeats collapsed, blanks dropped. PER = total edit distance / total reference length.
    """
    _check_ctc_inputs(train_feats, train_labels, test_feats, test_labels, tokens, epochs, batch_size)
    blank = tokens
    generator = torch.Generator().manual_seed(seed)
    device = torch.device(device)
    states, width = train_feats[0].shape[0], train_feats[0].shape[2]
    mean_frames = sum(f.shape[1] for f in train_feats) / len(train_feats)
    step_values = int(min(batch_size, len(train_feats)) * mean_frames * states * width)
    with torch.inference_mode(False), torch.enable_grad(), _one_thread_if_small(step_values, device):
        head = _WeightedSum(states, width, tokens + 1, generator).to(device)
        _train_ctc(head, head.optimizer(lr, 0.0), train_feats, train_labels, blank, epochs, batch_size, generator,
                   device)
        with torch.no_grad():
            train_errors, train_phones = _ctc_errors(head, train_feats, train_labels, blank, batch_size, device)
            errors, phones = _ctc_errors(head, test_feats, test_labels, blank, batch_size, device)
            weights = head.weights().cpu()
    return CtcProbe(
        per=round(errors / max(phones, 1), 6),
        layer_weights=[round(float(v), 6) for v in weights],
        errors=errors,
        reference_phones=phones,
        train_per=round(train_errors / max(train_phones, 1), 6),
        blank=blank,
    )


def _check_ctc_inputs(train_feats, train_labels, test_feats, test_labels, tokens: int, epochs: int,
                      batch_size: int) -> None:
    if epochs < 1 or batch_size < 1 or tokens < 1:
        raise ValueError(f"epochs, batch_size and tokens must be at least 1, got {epochs}, {batch_size}, {tokens}")
    if len(train_feats) != len(train_labels) or len(test_feats) != len(test_labels) or not train_feats:
        raise ValueError("give one label sequence per feature sequence, and at least one training sequence")
    for labels in (*train_labels, *test_labels):
        if any(not 0 <= t < tokens for t in labels):
            raise ValueError(f"labels must be phone indices in [0, {tokens}); the blank is {tokens}")


def _train_ctc(head: _WeightedSum, optimizer, feats: list[np.ndarray], labels: list[list[int]], blank: int,
               epochs: int, batch_size: int, generator: torch.Generator, device: torch.device) -> None:
    """CTC over minibatches of ``batch_size`` sequences, in an order drawn from ``generator`` each epoch."""
    for _ in range(epochs):
        order = torch.randperm(len(feats), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            x, lengths = _pad_frames([feats[i] for i in rows])  # (B, T, S, D), (B,)
            targets = [torch.tensor(labels[i], dtype=torch.long) for i in rows]
            log_probs = F.log_softmax(head(x.to(device)), -1).transpose(0, 1)  # (T, B, C)
            loss = F.ctc_loss(log_probs, torch.cat(targets).to(device), lengths,
                              torch.tensor([len(t) for t in targets]), blank=blank, zero_infinity=True)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def _ctc_errors(head, feats, labels, blank: int, batch_size: int, device) -> tuple[int, int]:
    """(total edit distance of the greedy decodings, total reference length)."""
    errors = phones = 0
    for start in range(0, len(feats), batch_size):
        x, lengths = _pad_frames(feats[start : start + batch_size])
        decoded = greedy_decode(head(x.to(device)), lengths, blank)
        for hypothesis, reference in zip(decoded, labels[start : start + batch_size]):
            errors += edit_distance(hypothesis, list(reference))
            phones += len(reference)
    return errors, phones


def edit_distance(a: list, b: list) -> int:
    """Levenshtein distance: the fewest insertions, deletions and substitutions turning a into b."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i] + [0] * len(b)
        for j, y in enumerate(b, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y))
        previous = current
    return previous[-1]
