"""The quality benchmark's probes of a teacher as ONNX Runtime runs it: float32, dynamic int8
(``--quantize int8``) and static int8 (``--quantize int8-static``, calibrated on clips of the
unlabelled corpus, never on the probes' clips), each with its per-layer cosine to float32 torch.

    python benchmarks/quality/deployed_probes.py --work benchmarks/quality/work --out deployed-probes.json

Reads the data and teachers ``reproduce.py`` built in --work; trains nothing but the probes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from reproduce import ROWS, Pipeline, log, ssl_rows  # noqa: E402

SCHEMES = (None, "int8", "int8-static")  # None: float32 in ONNX Runtime


def deployer(scheme: str | None, corpus, seed: int):
    """``deploy(target, net)`` for ``Pipeline.probe``: an ORT session of ``net``'s checked export with
    hidden states, quantized by ``scheme``, with the encoder's face (``OnnxEncoder``)."""
    import torch

    from speechprune.deploy.calibration import read_calibration
    from speechprune.deploy.runtime import OnnxEncoder, deployed_session

    def deploy(target, net):
        clips = (read_calibration(corpus, sampling_rate=target.sampling_rate, normalize=target.normalize, seed=seed)
                 if scheme == "int8-static" else None)
        runner, _ = deployed_session(target, net, threads=torch.get_num_threads(), quantize=scheme, hidden_states=True,
                                     attention_mask=target.attention_mask, calibration=clips)
        return OnnxEncoder(runner, net.spec)

    return deploy


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=str(HERE / "work"))
    parser.add_argument("--out", required=True, help="JSON file of the probes, by teacher and scheme")
    parser.add_argument("--teachers", default="ctc", help="comma-separated: ctc, ssl")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import torch

    from speechprune.folders.target import load_target, read_target
    from speechprune.io.atomic import write_text
    from speechprune.io.audio import scan_audio

    pipeline = Pipeline(Path(args.work), "full", args.seed)
    corpus = scan_audio(pipeline.data / "corpus")
    rows = {row.teacher: row for row in ROWS + ssl_rows(1) if row.kind == "teacher"}
    sets, results = pipeline.probe_sets(), {}
    for teacher in args.teachers.split(","):
        target = read_target(str(pipeline.teachers[teacher]))
        teacher_nets = {teacher: (target, load_target(target, torch.device("cpu"))[0])}
        for scheme in SCHEMES:
            name = f"{teacher} onnxruntime {scheme or 'float32'}"
            log(f"probes: {name}")
            results[name] = pipeline.probe(rows[teacher], sets, teacher_nets, deploy=deployer(scheme, corpus, args.seed))
            write_text(Path(args.out), json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
