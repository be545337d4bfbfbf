"""Train a FER classifier from scratch (teacher or judge) on FER2013 + CK+ + taiwanese_expr train, CPU-friendly.

    python tools/train_fer_classifier.py --name fer-teacher-vgg --arch vgg ...   # exact commands: the model cards

What: a network from ``affectsr/emotion/nets.py`` (``--arch``) trained on the complete FER2013
Training split (``fer2013/train_full.zip``, 28,709 images), CK+48 train (contempt dropped) and
taiwanese_expr train (largest MediaPipe face, cut wide and re-framed on the fly), with
augmentation that covers both framings the product uses: tight FER-style crops and the loose
``FaceBox.square(0.6)`` crops that ``affectsr evaluate`` and the pipeline make (``--framing``,
in units of the detector box side), plus flip, rotation, shift, brightness/contrast and random
erasing. Class balancing by loss weights (``--balance``). SGD + Nesterov, one-cycle (linear
warm-up, cosine decay), label smoothing, an EMA of the weights (what is evaluated and shipped).
Model selection on the *val* splits only; *test* is evaluated once, after training.

Seeded and deterministic on CPU (every batch's permutation, augmentation and dropout derive from
``--seed``, epoch and step), resumable: an atomic checkpoint ``<run>/ckpt.pt`` every
``--ckpt-minutes`` (re-run the same command to continue; loaded with ``weights_only=True``).
Decoded data are cached once under ``--cache``. Writes ``<out-dir>/<name>.safetensors`` and the
model card ``<name>.md``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import math
import os
import platform
import shlex
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from affectsr.atomic import atomic_write  # noqa: E402
from affectsr.emotion.classifier import (  # noqa: E402
    EMOTIONS,
    WEIGHTS_DIR,
    ClassifierConfig,
    EmotionClassifier,
    build_net,
    load_emotion_classifier,
    save_classifier_weights,
    to_model_input,
)
from affectsr.emotion.data import read_labels, resolve_data_root  # noqa: E402
from affectsr.emotion.evaluate import DatasetReport, format_report, load_face_set  # noqa: E402
from affectsr.emotion.faces import FER_MARGIN, largest_face  # noqa: E402
from affectsr.emotion.metrics import confusion_matrix  # noqa: E402
from affectsr.images import read_image, resize  # noqa: E402
from affectsr.metrics import LUMA  # noqa: E402
from affectsr.faces import crop_padded  # noqa: E402

LOOSE_MARGIN = 0.6
"""``FaceBox.square(0.6)``: how ``affectsr evaluate``, ``prepare`` and the pipeline cut faces (side = box x 1.6)."""
FER_FRAME = 1.0 / 0.86
"""FER2013/CK+48 image side in detector-box units (MediaPipe's box is ~0.86 of the side, faces.py)."""
WIDE_MARGIN = 1.0
"""taiwanese_expr train faces are cached at square(1.0) (2x the box) so any framing up to that can be cut."""
WIDE_SIZE = 80
CANVAS = 48
"""Augmented crops are rendered at 48 px (FER2013's side); the wrapper's own resize then takes them to ``input_size``."""
_LUMA = torch.tensor(LUMA)


# ----------------------------------------------------------------------------- data

def _grey_u8(rgb: np.ndarray) -> np.ndarray:
    """N x S x S x 3 uint8 -> N x S x S uint8 BT.601 luma (what the wrapper computes in float)."""
    return np.clip(np.rint(rgb.astype(np.float32) @ _LUMA.numpy()), 0, 255).astype(np.uint8)


def load_fer_train_full(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """All 28,709 FER2013 Training images from ``fer2013/train_full.zip`` (members ``train/<class>/<file>``), sorted by name."""
    path = root / "fer2013" / "train_full.zip"
    if not path.is_file():
        raise SystemExit(f"{path} not found (see shared/data/MANIFEST.md)")
    xs, ys = [], []
    with zipfile.ZipFile(path) as z:
        for name in sorted(n for n in z.namelist() if n.endswith((".jpg", ".png"))):
            label = name.split("/")[1]
            if label not in EMOTIONS:
                continue
            img = np.asarray(Image.open(io.BytesIO(z.read(name))).convert("L"))
            if img.shape != (48, 48):
                raise SystemExit(f"{path}:{name}: expected 48 x 48, got {img.shape}")
            xs.append(img)
            ys.append(EMOTIONS.index(label))
    return np.stack(xs), np.array(ys, np.int64)


def load_wide_photos(dataset: str, split: str, root: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Largest detected face of each photo cut at ``square(WIDE_MARGIN)``, grey ``WIDE_SIZE`` px; and how many had no face."""
    from affectsr.landmarks import LandmarkDetector

    faces = read_labels(dataset, split, root)
    xs, ys, skipped = [], [], 0
    with LandmarkDetector() as det:
        for f in faces:
            rgb = read_image(f.path).rgb
            face = largest_face(det.detect_faces(rgb))
            if face is None:
                skipped += 1
                continue
            xs.append(resize(crop_padded(rgb, face.square(WIDE_MARGIN)), (WIDE_SIZE, WIDE_SIZE)))
            ys.append(f.label_index)
    return _grey_u8(np.stack(xs)), np.array(ys, np.int64), skipped


def load_cache(root: Path, cache: Path) -> dict[str, np.ndarray]:
    """Decode every split once into ``cache/fer_data.npz`` (uint8 arrays + int64 labels) and reuse it."""
    path = cache / "fer_data.npz"
    if path.is_file():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    t0 = time.time()
    d: dict[str, np.ndarray] = {}
    d["fer2013/train/x"], d["fer2013/train/y"] = load_fer_train_full(root)
    for ds in ("fer2013", "ck_plus_48"):
        for split in ("train", "val", "test") if ds == "ck_plus_48" else ("val", "test"):
            fs = load_face_set(ds, split, root)
            d[f"{ds}/{split}/x"], d[f"{ds}/{split}/y"] = _grey_u8(fs.images), fs.labels
    x, y, skipped = load_wide_photos("taiwanese_expr", "train", root)
    d["taiwanese_expr/train/x"], d["taiwanese_expr/train/y"] = x, y
    d["taiwanese_expr/train/skipped"] = np.array(skipped)
    for split in ("val", "test"):
        for frame, margin in (("tight", FER_MARGIN), ("loose", LOOSE_MARGIN)):
            fs = load_face_set("taiwanese_expr", split, root, margin=margin)  # 128 px colour, as evaluate makes them
            d[f"taiwanese_expr/{split}/{frame}/x"], d[f"taiwanese_expr/{split}/{frame}/y"] = fs.images, fs.labels
            d[f"taiwanese_expr/{split}/{frame}/skipped"] = np.array(len(fs.skipped))
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: np.savez(open(tmp, "wb"), **d))
    print(f"cached {path} in {time.time() - t0:.0f} s", flush=True)
    return d


def to_tensor(x: np.ndarray) -> torch.Tensor:
    """N x S x S (grey) or N x S x S x 3 (RGB) uint8 -> N x C x S x S float in [0, 1]."""
    t = torch.from_numpy(x)
    t = t[:, None] if t.ndim == 3 else t.permute(0, 3, 1, 2)
    return t.float().div_(255.0)


# ----------------------------------------------------------------------------- augmentation

def augment(x: torch.Tensor, frame: float, gen: torch.Generator, args: argparse.Namespace) -> torch.Tensor:
    """Grey N x 1 x S x S in [0, 1] whose side is ``frame`` detector boxes -> augmented N x 1 x CANVAS x CANVAS.

    The output's side is a random framing in ``args.framing`` (box units: 1.0 = FER_MARGIN 0,
    1.6 = square(0.6)) for a share ``args.loose_prob`` of the faces, in ``args.tight_framing`` for
    the others; then flip, rotation, shift; borders replicated; then contrast/brightness and random erasing.
    """
    n = x.shape[0]

    def u(lo: float = -1.0, hi: float = 1.0) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    framing = u(*args.framing)
    if args.loose_prob < 1.0:  # the rest of the faces keep a framing near the tight crops
        framing = torch.where(torch.rand(n, generator=gen) < args.loose_prob, framing, u(*args.tight_framing))
    scale = framing / frame
    ang = u() * math.radians(args.rotate)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(ang) * scale, torch.sin(ang) * scale
    tx, ty = u() * args.shift * 2 * scale, u() * args.shift * 2 * scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, [n, 1, CANVAS, CANVAS], align_corners=False)
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    c = u(1 - args.contrast, 1 + args.contrast).view(n, 1, 1, 1)
    b = u(-args.brightness, args.brightness).view(n, 1, 1, 1)
    mean = y.mean(dim=(2, 3), keepdim=True)
    y = ((y - mean) * c + mean + b).clamp_(0, 1)
    if args.erase > 0:
        erase = torch.rand(n, generator=gen) < args.erase
        area = u(0.02, 0.15) * CANVAS * CANVAS
        aspect = torch.exp(u(math.log(0.4), math.log(2.5)))
        h = (area * aspect).sqrt().clamp(1, CANVAS).long()
        w = (area / aspect).sqrt().clamp(1, CANVAS).long()
        y0 = (torch.rand(n, generator=gen) * (CANVAS - h + 1)).long()
        x0 = (torch.rand(n, generator=gen) * (CANVAS - w + 1)).long()
        fill = torch.rand(n, generator=gen)
        for i in torch.nonzero(erase).flatten().tolist():
            y[i, :, y0[i]:y0[i] + h[i], x0[i]:x0[i] + w[i]] = fill[i]
    return y


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def predict(net: torch.nn.Module, x: torch.Tensor, tta: bool = False, crop: float = 1.0, batch: int = 500) -> np.ndarray:
    """Softmax probabilities through the wrapper's own preprocessing (``to_model_input``); optional flip TTA, centre crop.

    ``net``: a body (given ``to_model_input`` at its size) or a whole ``EmotionClassifier``, which prepares its own
    input (ensembles read the face at each member's size; a ``flip`` config averages the mirror image).
    """
    net.eval()
    wrapped = isinstance(net, EmotionClassifier)
    size = net.config.input_size
    out = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        if crop < 1.0:
            s = xb.shape[-1]
            k = round(s * crop)
            o = (s - k) // 2
            xb = xb[..., o:o + k, o:o + k]
        if not wrapped:
            xb = to_model_input(xb, size)
        p = F.softmax(net(xb)[0], 1)
        if tta:
            p = (p + F.softmax(net(xb.flip(-1))[0], 1)) / 2
        out.append(p)
    return torch.cat(out).numpy()


def val_sets(data: dict[str, np.ndarray], split: str) -> dict[str, tuple[torch.Tensor, np.ndarray]]:
    """The evaluation sets of one split: fer2013, ck_plus_48, taiwanese_expr tight and loose (128 px colour)."""
    return {
        "fer2013": (to_tensor(data[f"fer2013/{split}/x"]), data[f"fer2013/{split}/y"]),
        "ck_plus_48": (to_tensor(data[f"ck_plus_48/{split}/x"]), data[f"ck_plus_48/{split}/y"]),
        "taiwanese_tight": (to_tensor(data[f"taiwanese_expr/{split}/tight/x"]), data[f"taiwanese_expr/{split}/tight/y"]),
        "taiwanese_loose": (to_tensor(data[f"taiwanese_expr/{split}/loose/x"]), data[f"taiwanese_expr/{split}/loose/y"]),
    }


def accuracies(net: torch.nn.Module, sets: dict[str, tuple[torch.Tensor, np.ndarray]]) -> dict[str, float]:
    return {k: float((predict(net, x).argmax(1) == y).mean()) for k, (x, y) in sets.items()}


def framing_table(net: torch.nn.Module, data: dict[str, np.ndarray]) -> list[dict]:
    """taiwanese_expr val/test accuracy: tight vs loose crops, colour vs grey (uint8 luma), and loose crops centre-cropped
    to the tight framing (1 / 1.6 of the side) as a deterministic framing step would."""
    rows = []
    for split in ("val", "test"):
        for frame in ("tight", "loose"):
            rgb, y = data[f"taiwanese_expr/{split}/{frame}/x"], data[f"taiwanese_expr/{split}/{frame}/y"]
            variants = {"colour": (to_tensor(rgb), 1.0), "grey": (to_tensor(_grey_u8(rgb)), 1.0)}
            if frame == "loose":
                variants["colour, centre 1/1.6"] = (to_tensor(rgb), 1.0 / (1.0 + LOOSE_MARGIN))
            for name, (x, crop) in variants.items():
                acc = float((predict(net, x, crop=crop).argmax(1) == y).mean())
                rows.append({"split": split, "framing": frame, "input": name, "n": len(y), "accuracy": acc})
    return rows


def report(net: torch.nn.Module, sets: dict[str, tuple[torch.Tensor, np.ndarray]], split: str, tta: bool = False) -> list[DatasetReport]:
    out = []
    for k, (x, y) in sets.items():
        pred = predict(net, x, tta=tta).argmax(1)
        out.append(DatasetReport(k, split, len(y), float((pred == y).mean()), confusion_matrix(y, pred, len(EMOTIONS))))
    return out


# ----------------------------------------------------------------------------- training

RECIPE_ARGS = ("name", "role", "arch", "widths", "depths", "stem", "input_size", "dropout", "epochs", "batch", "lr", "warmup",
               "weight_decay", "label_smoothing", "ema", "balance", "taiwanese_repeat", "framing", "loose_prob", "tight_framing", "rotate", "shift",
               "contrast", "brightness", "erase", "seed", "limit")
"""The arguments that determine the weights (the card's command lists all of them; --threads, paths do not change the result)."""

class Ema:
    """Exponential moving average of parameters and BN buffers (what is evaluated and shipped)."""

    def __init__(self, net: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.net = build_net(net.config)
        self.net.load_state_dict(net.state_dict())
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, net: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for e, p in zip(self.net.state_dict().values(), net.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(d).add_(p.detach(), alpha=1 - d)
            else:
                e.copy_(p)


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", help="weights name, e.g. fer-teacher-vgg (required to train)")
    ap.add_argument("--evaluate", metavar="CLASSIFIER", help="only evaluate a shipped name or .safetensors (val, test, framing table)")
    ap.add_argument("--role", choices=("teacher", "judge", "candidate"), default="candidate")
    ap.add_argument("--arch", choices=("vgg", "resnet"), default="vgg")
    ap.add_argument("--widths", default="32,64,128,256")
    ap.add_argument("--depths", default="2,2,2,2")
    ap.add_argument("--stem", type=int, default=32, help="first conv width (resnet)")
    ap.add_argument("--input-size", type=int, default=40)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05, help="peak SGD learning rate")
    ap.add_argument("--warmup", type=float, default=1.0, help="warm-up epochs")
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--balance", type=float, default=0.5,
                    help="class weights (count / mean count) ** -balance: 0 = none, 1 = inverse frequency")
    ap.add_argument("--taiwanese-repeat", type=int, default=2, help="taiwanese_expr train faces per epoch (x959)")
    ap.add_argument("--framing", type=lambda s: tuple(float(v) for v in s.split(",")), default=(0.95, 1.75),
                    help="output side range in detector-box units (1.0 = tight FER_MARGIN 0 crops, 1.6 = square(0.6))")
    ap.add_argument("--loose-prob", type=float, default=1.0,
                    help="share of faces framed from --framing; the others from --tight-framing (1 = all from --framing)")
    ap.add_argument("--tight-framing", type=lambda s: tuple(float(v) for v in s.split(",")), default=(1.0, 1.3))
    ap.add_argument("--rotate", type=float, default=15.0)
    ap.add_argument("--shift", type=float, default=0.08)
    ap.add_argument("--contrast", type=float, default=0.4)
    ap.add_argument("--brightness", type=float, default=0.2)
    ap.add_argument("--erase", type=float, default=0.25, help="random-erasing probability")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", default=None, help="data root (default: $AFFECTSR_DATA_ROOT or ../shared/data)")
    ap.add_argument("--cache", type=Path, default=REPO / ".data" / "cache" / "fer_classifier")
    ap.add_argument("--run", type=Path, default=None, help="run folder (checkpoint, log; default <cache>/runs/<name>)")
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--out-dir", type=Path, default=WEIGHTS_DIR)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N faces of each train source (smoke tests)")
    ap.add_argument("--stop-after", type=int, default=0, help="stop (checkpointed) after this many epochs of this call; for tests")
    args = ap.parse_args(argv)
    args.widths = tuple(int(v) for v in args.widths.split(","))
    args.depths = tuple(int(v) for v in args.depths.split(","))
    if not args.name and not args.evaluate:
        ap.error("--name is required to train (or pass --evaluate CLASSIFIER)")
    args.run = args.run or args.cache / "runs" / str(args.name)
    return args


def evaluate_only(name: str, data: dict[str, np.ndarray]) -> None:
    """Print val/test accuracy, confusion matrices, flip TTA and the framing table of an existing classifier."""
    net = load_emotion_classifier(name)  # the wrapper: ensembles and flip configs read as they ship
    for split in ("val", "test"):
        print(format_report(report(net, val_sets(data, split), split)))
    x, y = val_sets(data, "test")["fer2013"]
    print(f"\nfer2013 test with flip TTA: {float((predict(net, x, tta=True).argmax(1) == y).mean()):.2%}\n")
    print("| split | framing | input | n | accuracy |\n|---|---|---|---:|---:|")
    for r in framing_table(net, data):
        print(f"| {r['split']} | {r['framing']} | {r['input']} | {r['n']} | {r['accuracy']:.2%} |")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    root = resolve_data_root(args.data)
    data = load_cache(root, args.cache)
    if args.evaluate:
        evaluate_only(args.evaluate, data)
        return 0
    config = ClassifierConfig(arch=args.arch, input_size=args.input_size, widths=args.widths, depths=args.depths,
                              stem=args.stem, bn_eps=1e-5, dropout=args.dropout)

    # train sources: (grey uint8 N x S x S tensor, labels, framing in box units, repeat)
    sources = [
        ("fer2013", FER_FRAME, 1),
        ("ck_plus_48", FER_FRAME, 1),
        ("taiwanese_expr", 1.0 + WIDE_MARGIN, args.taiwanese_repeat),
    ]
    cut = slice(0, args.limit or None)
    xs = [torch.from_numpy(data[f"{s}/train/x"][cut])[:, None] for s, _, _ in sources]
    ys = [torch.from_numpy(data[f"{s}/train/y"][cut]) for s, _, _ in sources]
    frames = [f for _, f, _ in sources]
    index = torch.cat([torch.stack([torch.full((len(y),), i), torch.arange(len(y))], 1).repeat(r, 1)
                       for i, ((_, _, r), y) in enumerate(zip(sources, ys))])
    all_y = torch.cat([ys[i].repeat(r) for i, (_, _, r) in enumerate(sources)])
    counts = torch.bincount(all_y, minlength=len(EMOTIONS)).float()
    class_w = (counts / counts.mean()).pow(-args.balance)
    class_w = class_w / (class_w * counts).sum() * counts.sum()  # mean weight over the epoch's samples = 1
    train_counts = {s: {c: int(n) for c, n in zip(EMOTIONS, np.bincount(y.numpy(), minlength=7))} for (s, _, _), y in zip(sources, ys)}
    val = val_sets(data, "val")

    torch.manual_seed(args.seed)
    net = build_net(config).to(memory_format=torch.channels_last)
    n_params = sum(p.numel() for p in net.parameters())
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.SGD([{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=args.lr, momentum=0.9, nesterov=True)
    ema = Ema(net, args.ema)
    steps_per_epoch = len(index) // args.batch  # drop the last partial batch (BN)
    total_steps = args.epochs * steps_per_epoch
    warmup = int(args.warmup * steps_per_epoch)

    args.run.mkdir(parents=True, exist_ok=True)
    ckpt_path = args.run / "ckpt.pt"
    state = {"epoch": 1, "step_in_epoch": 0, "history": [], "train_seconds": 0.0, "wall_seconds": 0.0, "loss_sum": 0.0}
    if ckpt_path.is_file():
        ck = torch.load(ckpt_path, weights_only=True)
        if ck["config"] != json.dumps(config.to_dict()):
            raise SystemExit(f"{ckpt_path} was made with another config; use another --run or --name")
        net.load_state_dict(ck["net"])
        ema.net.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        state = json.loads(ck["state"])
        print(f"resumed {ckpt_path}: epoch {state['epoch']} step {state['step_in_epoch']}", flush=True)

    def save_ckpt() -> None:
        ck = {"net": net.state_dict(), "ema": ema.net.state_dict(), "opt": opt.state_dict(),
              "config": json.dumps(config.to_dict()), "state": json.dumps(state)}
        atomic_write(ckpt_path, lambda tmp: torch.save(ck, tmp))

    print(f"{args.name}: {args.arch} {n_params / 1e6:.2f} M params, {len(index)} train faces/epoch, {steps_per_epoch} steps/epoch, "
          f"class weights {[round(float(w), 3) for w in class_w]}, threads {torch.get_num_threads()}", flush=True)
    last_ckpt = time.time()
    epochs_this_call = 0
    while state["epoch"] <= args.epochs:
        epoch = state["epoch"]
        perm = torch.randperm(len(index), generator=torch.Generator().manual_seed(args.seed * 100_003 + epoch))
        net.train()
        t_epoch = time.time()
        steps_done_at_start = state["step_in_epoch"]
        for step in range(state["step_in_epoch"], steps_per_epoch):
            t_step = time.time()
            g = torch.Generator().manual_seed((args.seed * 100_003 + epoch) * 100_003 + step)
            torch.manual_seed((args.seed * 100_003 + epoch) * 100_003 + step)  # dropout
            batch = index[perm[step * args.batch:(step + 1) * args.batch]]
            parts, labels = [], []
            for s in range(len(sources)):
                rows = batch[batch[:, 0] == s, 1]
                if len(rows):
                    parts.append(augment(xs[s][rows].float().div_(255.0), frames[s], g, args))
                    labels.append(ys[s][rows])
            x = to_model_input(torch.cat(parts), config.input_size).contiguous(memory_format=torch.channels_last)
            y = torch.cat(labels)
            global_step = (epoch - 1) * steps_per_epoch + step
            for group in opt.param_groups:
                group["lr"] = lr_at(global_step, total_steps, warmup, args.lr)
            logits, _ = net(x)
            loss = F.cross_entropy(logits, y, weight=class_w, label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ema.update(net, global_step)
            state["loss_sum"] += float(loss.detach())
            state["step_in_epoch"] = step + 1
            state["train_seconds"] += time.time() - t_step
            if (step + 1) % 100 == 0:
                done = step + 1 - steps_done_at_start
                print(f"  epoch {epoch} step {step + 1}/{steps_per_epoch}: loss {state['loss_sum'] / (step + 1):.4f}, "
                      f"{done * args.batch / (time.time() - t_epoch):.0f} img/s", flush=True)
            if time.time() - last_ckpt > args.ckpt_minutes * 60:
                save_ckpt()
                last_ckpt = time.time()
        scores = accuracies(ema.net, val)
        state["wall_seconds"] = state.get("wall_seconds", 0.0) + time.time() - t_epoch
        scores["mean"] = float(np.mean(list(scores.values())))
        state["history"].append({"epoch": epoch, "train_loss": state["loss_sum"] / steps_per_epoch,
                                 "epoch_seconds": round(time.time() - t_epoch, 1), **scores})
        if scores["mean"] >= max(h["mean"] for h in state["history"]):
            save_classifier_weights(ema.net, args.run / "best.safetensors", {"epoch": str(epoch)})
        print(f"epoch {epoch}/{args.epochs}: loss {state['loss_sum'] / steps_per_epoch:.4f} "
              f"val {json.dumps({k: round(v, 4) for k, v in scores.items()})} ({time.time() - t_epoch:.0f} s, "
              f"lr {opt.param_groups[0]['lr']:.4f}, load {os.getloadavg()[0]:.1f})", flush=True)
        state.update(epoch=epoch + 1, step_in_epoch=0, loss_sum=0.0)
        save_ckpt()
        last_ckpt = time.time()
        epochs_this_call += 1
        if args.stop_after and epochs_this_call >= args.stop_after and state["epoch"] <= args.epochs:
            print("stopped (--stop-after); re-run the same command to resume", flush=True)
            return 0

    finish(args, config, data, val, state, train_counts, class_w, n_params)
    return 0


def finish(args: argparse.Namespace, config: ClassifierConfig, data: dict[str, np.ndarray], val: dict, state: dict,
           train_counts: dict, class_w: torch.Tensor, n_params: int) -> None:
    """Pick the best val epoch, evaluate test once, write the weights and the model card."""
    history = state["history"]
    best = max(history, key=lambda h: h["mean"])
    clf = load_emotion_classifier(str(args.run / "best.safetensors"))
    net = clf.net
    test = val_sets(data, "test")
    reports = {"val": report(net, val, "val"), "test": report(net, test, "test")}
    fer_test = test["fer2013"]
    tta = float((predict(net, fer_test[0], tta=True).argmax(1) == fer_test[1]).mean())
    framing = framing_table(net, data)
    recipe = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items() if k in RECIPE_ARGS}
    recipe.update(best_epoch=best["epoch"], train_seconds=round(state["train_seconds"]),
                  wall_seconds=round(state.get("wall_seconds") or sum(h["epoch_seconds"] for h in history)), params=n_params,
                  class_weights=[round(float(w), 4) for w in class_w], train_counts=train_counts)
    meta = {"source": f"trained from scratch by tools/train_fer_classifier.py ({args.role})",
            "role": args.role, "recipe": json.dumps(recipe), "labels": json.dumps(list(EMOTIONS)),
            "licence": "weights derived from FER2013, CK+ and taiwanese_expr: non-commercial research use only",
            "test_accuracy": json.dumps({r.dataset: round(r.accuracy, 6) for r in reports["test"]}),
            "fer2013_test_flip_tta": f"{tta:.6f}"}
    out = args.out_dir / f"{args.name}.safetensors"
    save_classifier_weights(net, out, meta)
    for split in ("val", "test"):
        print(format_report(reports[split]), flush=True)
    print(f"fer2013 test with flip TTA: {tta:.2%}\nwrote {out}", flush=True)
    card = args.out_dir / f"{args.name}.md"
    text = model_card(args, config, recipe, history, reports, tta, framing, data)
    atomic_write(card, lambda tmp: Path(tmp).write_text(text))
    (args.run / "result.json").write_text(json.dumps({"val": [r.to_dict() for r in reports["val"]],
                                                      "test": [r.to_dict() for r in reports["test"]],
                                                      "fer2013_test_tta": tta, "framing": framing, "recipe": recipe}, indent=1))
    print(f"wrote {card}", flush=True)


def model_card(args: argparse.Namespace, config: ClassifierConfig, recipe: dict, history: list[dict],
               reports: dict[str, list[DatasetReport]], tta: float, framing: list[dict], data: dict[str, np.ndarray]) -> str:
    cmd = "python tools/train_fer_classifier.py " + " ".join(
        f"--{k.replace('_', '-')} {shlex.quote(','.join(map(str, v)) if isinstance(v, (list, tuple)) else str(v))}"
        for k, v in vars(args).items() if k in RECIPE_ARGS)
    sets = ("fer2013", "ck_plus_48", "taiwanese_tight", "taiwanese_loose")
    rows = "\n".join(f"| {h['epoch']} | {h['train_loss']:.4f} | " + " | ".join(f"{h[s]:.2%}" for s in sets)
                     + f" | {h['mean']:.2%} | {h['epoch_seconds']:.0f} |" for h in history)
    acc = {(r.split, r.dataset): r for rs in reports.values() for r in rs}
    summary = "\n".join(f"| {s} | {acc[('val', s)].n} | {acc[('val', s)].accuracy:.2%} | {acc[('test', s)].n} | {acc[('test', s)].accuracy:.2%} |"
                        for s in sets)
    frame_rows = "\n".join(f"| {r['split']} | {r['framing']} | {r['input']} | {r['n']} | {r['accuracy']:.2%} |" for r in framing)
    skipped = {s: int(data[f"taiwanese_expr/{s}/tight/skipped"]) for s in ("val", "test")}
    role = {"teacher": "the **teacher**: the classifier training losses (EmotionConsistencyLoss) may use",
            "judge": "the **judge**: an independent classifier for measuring SR output. **No training loss may ever use it** "
                     "(it would stop being independent)",
            "candidate": "a candidate from the architecture search (not shipped)"}[args.role]
    wall = recipe["train_seconds"]
    return f"""# {args.name}: facial-expression classifier ({args.arch}, trained here from scratch)

Written by `{cmd}` (`--threads {args.threads}`) on {dt.date.today().isoformat()}
({platform.platform()}, {platform.processor() or platform.machine()}, torch {torch.__version__}, CPU only).

## What it is
Role: {role}.
`affectsr.emotion.load_emotion_classifier("{args.name}")`: RGB or grey in [0, 1], any size -> `(logits, features)`
in one differentiable pass (BT.601 luma, antialiased resize to {config.input_size} px, `(x - 0.5) * 2`).
Architecture `{config.arch}` (`affectsr/emotion/nets.py`): widths {list(config.widths)}, depths {list(config.depths)},
{"stem " + str(config.stem) + ", " if config.arch == "resnet" else ""}dropout {config.dropout}, {recipe["params"] / 1e6:.2f} M parameters;
`features` is the last stage's map ({config.widths[-1]} channels). Labels, in this order: {", ".join(EMOTIONS)}.

## Licence and data terms
- Code: MIT (this repository). Source: trained here, not converted from anyone's weights.
- Training images: FER2013 (ICML 2013 challenge via Kaggle; research use), CK+ (CK+ licence agreement,
  non-commercial research only), taiwanese_expr (Chen, Cho & Tseng 2013; academic research only).
  These weights are derived from them: **use them for non-commercial research only**.

## Data (train splits only; counts per class in label order)
- fer2013: the complete official Training split, `fer2013/train_full.zip`: {json.dumps(recipe["train_counts"]["fer2013"])}
- ck_plus_48 train (contempt dropped: not one of the 7 classes): {json.dumps(recipe["train_counts"]["ck_plus_48"])}
- taiwanese_expr train, largest MediaPipe face cut at `square({WIDE_MARGIN})`, {WIDE_SIZE} px grey, x{args.taiwanese_repeat} per epoch
  ({int(data["taiwanese_expr/train/skipped"])} photos without a detected face left out): {json.dumps(recipe["train_counts"]["taiwanese_expr"])}
- Class weights in the loss (count / mean count) ^ -{args.balance}: {recipe["class_weights"]}

## Recipe (seed {args.seed}, deterministic on CPU)
- SGD, Nesterov momentum 0.9, batch {args.batch}, peak lr {args.lr} after {args.warmup} warm-up epoch(s), cosine decay to 0 over
  {args.epochs} epochs; weight decay {args.weight_decay} (not on BN/bias); label smoothing {args.label_smoothing};
  EMA of the weights (decay {args.ema}) is what is evaluated and shipped.
- Augmentation (on 48 px canvases, then the wrapper's own resize): random framing with the output side
  {args.framing[0]}-{args.framing[1]} detector boxes (1.0 = the tight `FER_MARGIN` 0 crop, 1.6 = the loose `square(0.6)` crop
  that `evaluate` and the pipeline make; FER2013/CK+ images are taken as {FER_FRAME:.2f} boxes, borders replicated)
  {"for every face" if args.loose_prob >= 1 else f"for {args.loose_prob:.0%} of the faces, {args.tight_framing[0]}-{args.tight_framing[1]} for the others"},
  horizontal flip, +-{args.rotate} deg rotation, +-{args.shift:.0%} shift, contrast x(1 +- {args.contrast}),
  brightness +-{args.brightness}, random erasing p={args.erase} (2-15 % of the area, random grey).
- Model selection: the epoch whose mean val accuracy over fer2013 (PublicTest), ck_plus_48 val and
  taiwanese_expr val (tight and loose crops) is highest: **epoch {recipe["best_epoch"]}**. Test splits were evaluated once, after training.
- Training time: {wall / 3600:.2f} h in training steps, {recipe["wall_seconds"] / 3600:.2f} h wall including validation
  on {args.threads} torch thread(s) of a shared 2-core machine (other jobs ran beside it: epoch times vary with the load);
  the `s` column is each epoch's wall time including validation.

| epoch | train loss | val fer2013 | val ck_plus_48 | val taiwanese tight | val taiwanese loose | mean | s |
|---:|---:|---:|---:|---:|---:|---:|---:|
{rows}

## Accuracy (single view, the wrapper as the loss uses it)
taiwanese_expr faces: largest MediaPipe face, 128 px colour crops; tight = `FER_MARGIN` 0, loose = `square(0.6)`
({skipped["val"]} val / {skipped["test"]} test photos without a detected face are left out).

fer2013 val = PublicTest, test = PrivateTest (the official splits).

| set | val n | val | test n | test |
|---|---:|---:|---:|---:|
{summary}

FER2013 PrivateTest with horizontal-flip TTA (mean of two softmaxes; not what the wrapper does): **{tta:.2%}**.

### Framing and colour (taiwanese_expr)
"grey" = the same crops as uint8 BT.601 luma; "centre 1/1.6" = the loose crop's central 1/1.6 (back to the tight framing),
i.e. what a fixed framing step inside the wrapper would do.

| split | framing | input | n | accuracy |
|---|---|---|---:|---:|
{frame_rows}

### Test confusion matrices
{format_report(reports["test"])}

### Val confusion matrices
{format_report(reports["val"])}

## Caveats
- FER2013 labels are noisy (see FER+); human accuracy on it is about 65 +- 5 %.
- CK+ val/test are small (3 near-identical frames per sequence, few subjects): one sequence moves them by several points.
- taiwanese_expr has 29 subjects (train/val/test by subject); val and test are ~4-5 subjects each.
"""


if __name__ == "__main__":
    sys.exit(main())
