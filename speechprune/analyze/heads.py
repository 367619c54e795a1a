"""Per-head and per-gate statistics of an encoder on a few batches of audio.

Every model the tool understands is an ``EncoderModules`` (``Encoder`` for stock models and
prune runs, ``SpeechpruneModel`` for shrunk folders), so one code path serves all: masks go in
through ``encode(..., masks=...)`` and layers are run one by one from ``encoder.layers``.
Attention probabilities are recomputed in a forward hook from ``Attention.inputs``, the same
q, k, v and mask (WavLM's gated position bias included) that ``Attention.forward`` feeds SDPA.

Passes per batch, with L layers, H heads per layer and P random projections:

* 1 forward with autograd (the reference; attention statistics are taken in its hooks),
* P backward passes through it (gradient importance of every gate at z = 1),
* L * H partial forwards without autograd for drop-one (head h of layer l masked: only
  layers l..L-1 are rerun, from the cached input of layer l).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..method.gates import GateLayout
from ..model.masks import EncoderMasks, LayerMasks


def combine(base: EncoderMasks | None, extra: EncoderMasks) -> EncoderMasks:
    """Key-wise product of two mask sets (None = all ones)."""
    return extra if base is None else base * extra


def attention_probabilities(module, x, key_mask, position_bias, masks: LayerMasks | None):
    """(probs (B, H, T, T), per-head output (B, H, T, d_vo)) from the inputs ``Attention.forward`` uses."""
    q, k, v, attn_mask = module.inputs(x, key_mask, position_bias, masks)
    scores = (q @ k.transpose(-1, -2)) * module.scaling  # (B, H, T, T)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    probs = scores.softmax(-1)
    return probs, probs @ v


@dataclass
class HeadAccumulator:
    """Sums over real query frames, per layer and head."""

    entropy: list[torch.Tensor] = field(default_factory=list)
    distance: list[torch.Tensor] = field(default_factory=list)
    contribution: list[torch.Tensor] = field(default_factory=list)
    residual: list[float] = field(default_factory=list)  # summed norm of each layer's input stream
    frames: float = 0.0

    def init(self, head_counts: list[int]) -> None:
        for h in head_counts:
            for stat in (self.entropy, self.distance, self.contribution):
                stat.append(torch.zeros(h, dtype=torch.float64))
            self.residual.append(0.0)


def _attention_hook(acc: HeadAccumulator, layer: int, real: dict):
    def hook(module, args, output):
        x, key_mask, position_bias = args[0], args[1], args[2]
        masks = args[3] if len(args) > 3 else None
        if module.num_heads == 0 or not real.get("active"):
            return
        with torch.no_grad():
            x = x.detach()
            probs, per_head = attention_probabilities(module, x, key_mask, position_bias, masks)
            frames = real["mask"].to(probs.dtype)  # (B, T) real query frames
            t = x.shape[1]
            entropy = -(probs * probs.clamp_min(1e-30).log()).sum(-1)  # (B, H, T)
            positions = torch.arange(t, device=x.device, dtype=probs.dtype)
            distance = (probs * (positions[None, :] - positions[:, None]).abs()).sum(-1)  # (B, H, T)
            out_weight = module.output_weight()
            w = out_weight.view(out_weight.shape[0], module.num_heads, module.width)  # (D, H, d_vo)
            contribution = torch.einsum("bhtv,dhv->bhtd", per_head, w).norm(dim=-1)  # (B, H, T)
            mha = masks.get("mha") if masks is not None else None
            if mha is not None:
                contribution = contribution * mha.detach().abs()
            for stat, value in ((acc.entropy, entropy), (acc.distance, distance), (acc.contribution, contribution)):
                stat[layer] += (value * frames[:, None, :]).sum((0, 2)).double().cpu()

    return hook


def _relative_change(new: torch.Tensor, ref: torch.Tensor, frames: torch.Tensor) -> tuple[float, float]:
    """(squared norm of the difference, squared norm of the reference) over real frames."""
    w = frames[..., None].to(ref.dtype)
    return float(((new - ref) ** 2 * w).sum()), float((ref**2 * w).sum())


def run_from(net, layer: int, x, key_mask, position_bias, masks: EncoderMasks | None):
    """Layers ``layer``..L-1 from their input ``x``: (outputs of each of those layers, final output)."""
    outputs = []
    for i in range(layer, len(net.encoder.layers)):
        x = net.encoder.layers[i](x, key_mask, position_bias, masks.layer(i) if masks is not None else None)
        outputs.append(x)
    last = net.encoder.layer_norm(x) if net.encoder.pre_norm else x
    return outputs, last


def without_head(masks: EncoderMasks, layer: int, head: int, heads: int, device) -> EncoderMasks:
    """``masks`` with head ``head`` of layer ``layer`` (of ``heads``) masked out as well."""
    dropped = torch.ones(heads, device=device)
    dropped[head] = 0
    return masks.times("head", layer, dropped)


class HeadStatistics:
    """The sums of every statistic over the batches seen so far; ``result()`` turns them into means."""

    def __init__(self, net, layout: GateLayout, base_masks: EncoderMasks | None, seed: int, device):
        self.net, self.layout, self.base_masks, self.device = net, layout, base_masks, device
        self.head_counts = [len(layer.heads) if layer.attention else 0 for layer in net.spec.layers]
        n_layers = len(self.head_counts)
        self.heads = HeadAccumulator()
        self.heads.init(self.head_counts)
        self.grad_sum = torch.zeros(layout.size, dtype=torch.float64)  # (G,) squared gate gradients
        # drop-one, per layer l: squared change of each later output k (layers l..L-1, then the final
        # output) per head, and the squared norm of the reference outputs
        self.drop_num = [[[0.0] * (n_layers - l + 1) for _ in range(h)] for l, h in enumerate(self.head_counts)]
        self.drop_den = [[0.0] * (n_layers - l + 1) for l in range(n_layers)]
        self.generator = torch.Generator().manual_seed(seed)
        self.passes = {"forward_with_grad": 0, "backward": 0, "drop_one_partial_forwards": 0, "drop_one_layer_calls": 0}
        self.batches = 0

    def gradients(self, waveforms, mask, frames, projections: int, hooked: dict):
        """One forward with autograd (the attention hooks take their statistics) and ``projections``
        backward passes of random projections of the output; returns (hidden states, final output)."""
        self.batches += 1
        layout = self.layout
        z = torch.ones(layout.size, device=self.device, requires_grad=True)
        out = self.net.encode(waveforms, mask, combine(self.base_masks, layout.values(z).masks()))
        hooked["active"] = False
        self.passes["forward_with_grad"] += 1
        h = out.last_hidden_state
        weight = frames[..., None].to(h.dtype)
        scale = max(float((h.detach() ** 2 * weight).sum()), 1e-30)
        for p in range(projections):
            r = torch.randn(h.shape, generator=self.generator).to(self.device) * weight
            (grad,) = torch.autograd.grad((r * h).sum(), z, retain_graph=p < projections - 1)
            self.grad_sum += grad.double().cpu() ** 2 / scale / projections
            self.passes["backward"] += 1
        self.heads.frames += float(frames.sum())
        hidden = [s.detach() for s in out.hidden_states]
        for l in range(len(self.head_counts)):
            self.heads.residual[l] += float((hidden[l].norm(dim=-1) * frames).sum())
        return hidden, h.detach()

    @torch.no_grad()
    def drop_one(self, hidden: list, last, frames, key_mask) -> None:
        """Each head masked alone: layers l..L-1 rerun from the cached input of its layer l."""
        net, n_layers = self.net, len(self.head_counts)
        fixed = combine(self.base_masks, self.layout.values(torch.ones(self.layout.size, device=self.device)).masks())
        position_bias = net.encoder.rel_pos(last.shape[1]) if net.encoder.rel_pos is not None else None
        for l in range(n_layers):
            refs = hidden[l + 1:] + [last]
            for k, ref in enumerate(refs):
                self.drop_den[l][k] += float((ref**2 * frames[..., None]).sum())
            for head in range(self.head_counts[l]):
                masks = without_head(fixed, l, head, self.head_counts[l], self.device)
                outputs, new_last = run_from(net, l, hidden[l], key_mask, position_bias, masks)
                self.passes["drop_one_partial_forwards"] += 1
                self.passes["drop_one_layer_calls"] += n_layers - l
                for k, (new, ref) in enumerate(zip(outputs + [new_last], refs)):
                    self.drop_num[l][head][k] += _relative_change(new, ref, frames)[0]

    def result(self, drop_one: bool) -> dict:
        acc, n = self.heads, max(self.heads.frames, 1.0)
        grad = self.grad_sum / max(self.batches, 1)
        values = self.layout.values(grad)
        result = {
            "heads": [list(layer.heads) if layer.attention else [] for layer in self.net.spec.layers],
            "grad_importance": [
                (values.get("head", l).tolist() if values.get("head", l) is not None else [0.0] * h)
                for l, h in enumerate(self.head_counts)
            ],
            "entropy": [(e / n).tolist() for e in acc.entropy],
            "mean_distance": [(d / n).tolist() for d in acc.distance],
            "contribution_norm": [(c / n).tolist() for c in acc.contribution],
            "contribution_ratio": [(c / max(acc.residual[l], 1e-30)).tolist() for l, c in enumerate(acc.contribution)],
            "gate_importance": grad,
            "passes": self.passes,
        }
        if drop_one:
            result["drop_one"] = [[(num[-1] / max(den[-1], 1e-30)) ** 0.5 for num in heads]
                                  for heads, den in zip(self.drop_num, self.drop_den)]
            result["drop_one_by_layer"] = [
                [[(num[k] / max(den[k], 1e-30)) ** 0.5 for k in range(len(den) - 1)] for num in heads]
                for heads, den in zip(self.drop_num, self.drop_den)
            ]
        return result


def head_statistics(net, batches, *, layout: GateLayout, base_masks: EncoderMasks | None, projections: int,
                    seed: int, drop_one: bool, use_attention_mask: bool, device, progress=None) -> dict:
    """Every statistic of the module docstring, on ``batches`` (a list of ``io.batches.Batch``)."""
    stats = HeadStatistics(net, layout, base_masks, seed, device)
    hooked = {}  # the real frames of the batch, and whether the hooks take statistics (the forward with autograd)
    hooks = [
        layer.attention.register_forward_hook(_attention_hook(stats.heads, l, hooked))
        for l, layer in enumerate(net.encoder.layers)
        if layer.attention is not None
    ]
    try:
        for index, batch in enumerate(batches):
            waveforms = batch.waveforms.to(device)
            mask = batch.attention_mask.to(device) if use_attention_mask else None
            frames_total = int(net.spec.output_lengths(torch.tensor(waveforms.shape[1])).item())
            frames = net.frame_mask(batch.attention_mask.to(device), frames_total)  # (B, T) real frames
            hooked["mask"], hooked["active"] = frames, True
            if progress:
                progress(f"batch {index + 1}/{len(batches)}: forward + {projections} backward passes")
            hidden, last = stats.gradients(waveforms, mask, frames, projections, hooked)
            if drop_one:
                if progress:
                    progress(f"batch {index + 1}/{len(batches)}: drop-one, {sum(stats.head_counts)} heads")
                stats.drop_one(hidden, last, frames, frames[:, None, None, :] if mask is not None else None)
    finally:
        for hook in hooks:
            hook.remove()
    return stats.result(drop_one)
