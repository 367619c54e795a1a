"""The built-in demo: a tiny wav2vec2-style model and generated speech-like audio, no downloads."""

from __future__ import annotations

from pathlib import Path

import torch

from ..io import atomic
from ..io.synth import write_corpus
from ..model.loading import quiet_transformers

DEMO_CONFIG = dict(
    hidden_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=512,
    conv_dim=(64,) * 7,  # standard kernels and strides: 20 ms frames at 16 kHz
    num_conv_pos_embeddings=32,
    num_conv_pos_embedding_groups=8,
)
DEMO_FILES = 48
DEMO_SECONDS = (1.5, 6.0)


def prepare_demo(folder: str | Path) -> tuple[Path, Path]:
    """Write (once) a random-weight tiny model and a generated corpus under ``folder``.

    Returns (model folder, audio folder). Both are deterministic, so an existing complete
    copy is reused.
    """
    folder = Path(folder)
    model_dir, audio_dir = folder / "model", folder / "audio"
    done = folder / "done.json"
    if done.exists():
        return model_dir, audio_dir
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    with quiet_transformers():
        Wav2Vec2Model(Wav2Vec2Config(**DEMO_CONFIG)).save_pretrained(model_dir)
        Wav2Vec2FeatureExtractor(return_attention_mask=False, do_normalize=True).save_pretrained(model_dir)
    write_corpus(audio_dir, n_files=DEMO_FILES, seconds=DEMO_SECONDS, seed=0)
    atomic.write_json(done, {"model": str(model_dir), "audio": str(audio_dir)})
    return model_dir, audio_dir
