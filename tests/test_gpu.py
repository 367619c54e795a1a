"""The CUDA paths: encoder numerics on the GPU, half-precision shrunk models, a prune run with
bf16 autocast, and `bench` with CUDA timing and CUDA graphs.

They need a CUDA GPU and are skipped without one (CI has none); `benchmarks/gpu_checks.sh`
runs them on a GPU machine together with the GPU benchmarks.
"""

from __future__ import annotations

import json

import pytest
import torch

from speechprune.folders.shrunk import load
from speechprune.model.loading import inspect_model, load_encoder
from speechprune.prune.config import PruneConfig
from speechprune.prune.job import prune
from speechprune.shrink.job import shrink_run
from helpers.commands import cli

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def shrunk(model_dir, audio_dir, tmp_path_factory):
    """A tiny Large-style wav2vec2 pruned on the GPU in bf16, then shrunk."""
    root = tmp_path_factory.mktemp("gpu")
    prune(PruneConfig(model=str(model_dir("wav2vec2", "large")), sparsity=0.5, data=str(audio_dir),
                      out=str(root / "run"), steps=6, crop_seconds=1.5, batch_seconds=3, device="cuda",
                      precision="bf16"))
    shrink_run(root / "run", root / "shrunk")
    return root


def test_encoder_on_the_gpu_matches_the_cpu(model_dir):
    encoder = load_encoder(inspect_model(str(model_dir("wav2vec2", "large")))).encoder
    waveforms = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = encoder(waveforms).last_hidden_state
        got = encoder.cuda()(waveforms.cuda()).last_hidden_state.cpu()
    assert (got - expected).abs().max() / expected.abs().max() < 1e-3  # TF32 matmuls allowed


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_shrunk_model_in_half_precision_stays_close(shrunk, dtype):
    waveforms = torch.randn(2, 24000, generator=torch.Generator().manual_seed(1))
    reference = load(shrunk / "shrunk")
    half = load(shrunk / "shrunk", dtype=dtype).cuda()
    with torch.inference_mode():
        expected = reference(waveforms).last_hidden_state
        got = half(waveforms.cuda().to(dtype)).last_hidden_state.float().cpu()
    assert torch.isfinite(got).all()
    cosine = torch.nn.functional.cosine_similarity(got, expected, dim=-1).mean()
    assert cosine > 0.99


def test_bench_times_on_the_gpu_with_cuda_graphs(capsys, shrunk, model_dir):
    result = cli(capsys, "bench", shrunk / "shrunk", "--baseline", model_dir("wav2vec2", "large"), "--device", "cuda",
                 "--seconds", "1", "--compile", "--repeat", "3", "--min-time", "0", "--json")
    code, out, err = result
    assert code == 0, err
    report = json.loads(out)
    assert report["environment"]["device"].startswith("cuda")  # resolved, e.g. "cuda:0"
    rows = report["results"]
    assert sorted(r["compiled"] for r in rows) == [False, False, True, True]
    assert all(r["latency_ms"]["median"] > 0 for r in rows)
    assert all(r["peak_memory_bytes"] is not None for r in rows if not r["compiled"])
