"""Convert musicnn's TensorFlow checkpoint to the ONNX file MoodLane ships (run once).

musicnn (Pons & Serra, ISC licence) needs TensorFlow 1-style graphs; MoodLane never does.
This script runs in a side environment and writes `engine/weights/musicnn_msd.onnx` plus a
parity record. Set-up (Python 3.11; the versions are the ones known to work here):

    python3.11 -m venv /tmp/musicnn-env
    /tmp/musicnn-env/bin/pip install tensorflow-cpu==2.15.1 "numpy<2" librosa==0.10.2.post1 \
        "setuptools<81" tf2onnx==1.17.0 onnxruntime soundfile
    /tmp/musicnn-env/bin/pip install --no-deps musicnn
    /tmp/musicnn-env/bin/python export/musicnn_to_onnx.py [--model MSD_musicnn] [--clip some.flac]

Parity is measured two ways and written to `engine/weights/musicnn_msd.parity.json`:
TensorFlow against onnxruntime on the same log-mel patches, and musicnn's own librosa
front end + TensorFlow against MoodLane's numpy front end (`engine/audio/melspec.py`) +
onnxruntime, the path MoodLane runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("tags", "penultimate", "pooled")


def _melspec_module():
    spec = importlib.util.spec_from_file_location("melspec", ROOT / "engine" / "audio" / "melspec.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="MSD_musicnn", choices=("MSD_musicnn", "MTT_musicnn"))
    ap.add_argument("--out", default=str(ROOT / "engine" / "weights" / "musicnn_msd.onnx"))
    ap.add_argument("--clip", help="an audio file for the end-to-end parity check")
    args = ap.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import librosa
    import musicnn
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx
    from musicnn import configuration as config
    from musicnn import models

    tf.compat.v1.disable_eager_execution()
    mel = _melspec_module()
    labels = config.MSD_LABELS if args.model.startswith("MSD") else config.MTT_LABELS
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, mel.PATCH, mel.N_MELS], name="logmel")
        y, *_, mean_pool, max_pool, penultimate = models.define_model(x, False, args.model, len(labels))
        tf.identity(tf.nn.sigmoid(y), name="tags")
        tf.identity(penultimate, name="penultimate")
        tf.identity(tf.concat([mean_pool, max_pool], axis=1), name="pooled")
        sess = tf.compat.v1.Session(graph=graph)
        tf.compat.v1.train.Saver().restore(sess, str(Path(musicnn.__file__).parent / args.model) + "/")
        frozen = tf.compat.v1.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(), list(OUTPUTS))

    t0 = time.time()
    model_proto, _ = tf2onnx.convert.from_graph_def(frozen, input_names=["logmel:0"], output_names=[f"{o}:0" for o in OUTPUTS], opset=17)
    # Plain names for the runtime: logmel -> tags, penultimate, pooled.
    rename = {"logmel:0": "logmel", **{f"{o}:0": o for o in OUTPUTS}}
    for node in model_proto.graph.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
        node.output[:] = [rename.get(o, o) for o in node.output]
    for vi in list(model_proto.graph.input) + list(model_proto.graph.output):
        vi.name = rename.get(vi.name, vi.name)
    model_proto.doc_string = f"musicnn {args.model} (Pons & Serra, ISC licence), converted by export/musicnn_to_onnx.py"
    meta = model_proto.metadata_props.add()
    meta.key, meta.value = "labels", json.dumps(labels)
    out = Path(args.out)
    out.write_bytes(model_proto.SerializeToString())
    convert_s = time.time() - t0

    sess_ort = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    patch = rng.uniform(0, 3, (4, mel.PATCH, mel.N_MELS)).astype(np.float32)
    tf_out = sess.run([graph.get_tensor_by_name(f"{o}:0") for o in OUTPUTS], {x: patch})
    ort_out = sess_ort.run(list(OUTPUTS), {"logmel": patch})
    parity = {
        "model": args.model,
        "opset": 17,
        "tensorflow": tf.__version__,
        "tf2onnx": tf2onnx.__version__,
        "onnxruntime": ort.__version__,
        "bytes": out.stat().st_size,
        "convert_s": round(convert_s, 1),
        "tf_vs_onnx_max_abs_same_input": {o: float(np.abs(a - b).max()) for o, a, b in zip(OUTPUTS, tf_out, ort_out)},
    }
    if args.clip:
        # musicnn's own path (librosa load + mel, float16 cast as musicnn does) vs MoodLane's.
        audio, _ = librosa.load(args.clip, sr=mel.SR)
        ref = librosa.feature.melspectrogram(y=audio, sr=mel.SR, hop_length=mel.HOP, n_fft=mel.N_FFT, n_mels=mel.N_MELS).T
        ref = np.log10(10000 * ref.astype(np.float16) + 1).astype(np.float32)
        ours = mel.log_mel(audio)
        n = min(len(ref), len(ours)) // mel.PATCH * mel.PATCH
        ref_p = ref[:n].reshape(-1, mel.PATCH, mel.N_MELS)
        our_p = ours[:n].reshape(-1, mel.PATCH, mel.N_MELS)
        tf_ref = sess.run([graph.get_tensor_by_name(f"{o}:0") for o in OUTPUTS], {x: ref_p})
        ort_ours = sess_ort.run(list(OUTPUTS), {"logmel": our_p})
        parity["clip"] = Path(args.clip).name
        parity["logmel_max_abs_numpy_vs_librosa"] = float(np.abs(ref[:n] - ours[:n]).max())
        parity["end_to_end_max_abs_musicnn_vs_moodlane"] = {o: float(np.abs(a - b).max()) for o, a, b in zip(OUTPUTS, tf_ref, ort_ours)}
        parity["end_to_end_windows"] = int(len(ref_p))
    out.with_suffix(".parity.json").write_text(json.dumps(parity, indent=1) + "\n")
    print(json.dumps(parity, indent=1))


if __name__ == "__main__":
    main()
