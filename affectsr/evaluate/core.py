"""``affectsr evaluate``: SR models vs HR on a folder of faces, the numbers a paper table needs.

    affectsr evaluate --model bicubic,affectsr-x4-lite --data ../shared/data/taiwanese_expr --scale 4 --out eval/

``--data`` is a folder of images, a folder with ``labels.csv`` (``path,label,split,subject``), or a
cache made by ``affectsr prepare`` (has ``index.json``). Faces are cropped exactly as ``prepare``
does (:func:`affectsr.data.prepare.process_image`: largest MediaPipe face, ``FaceBox.square(0.6)``,
128 px HR); LR = PIL bicubic downscale. Per model: PSNR/SSIM on Y with ``scale`` border pixels
cropped (:mod:`affectsr.metrics`); expression fidelity (ECM, SR-vs-HR label agreement, FER accuracy
against the true labels) read by the **judge**, a FER classifier no training loss uses, and again by
the **teacher** (the classifier the emotion loss trains against) as a second column, so that a
model tuned to please its teacher shows it; identity (dlib face descriptors, SR vs HR: cosine and
the share within dlib's 0.6 same-person distance; needs the ``[identity]`` extra); and expression
geometry: landmark NME of MediaPipe on SR vs on HR, whole face and mouth / eyes / brows (faces where
either is not found are excluded and counted). LPIPS is not computed: no weights ship offline.

Writes ``per_image.csv``, ``summary.json`` (model name -> metrics), ``run.json`` (command, machine,
date, data, skipped models), ``summary.md``, ``grid.png`` and ``psnr_vs_ecm.png``.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.dataset import FaceCache
from ..data.prepare import PrepareConfig, discover, process_image
from ..emotion import EmotionClassifier, ecm, label_agreement, load_emotion_classifier, mean_kl
from ..emotion.classifier import load_fer_pair
from ..emotion.faces import classify_crops
from ..identity import IdentityEncoder, IdentityModelMissing, identity_scores
from ..images import bicubic_down, resize
from ..landmarks import NUM_LANDMARKS, shared_detector
from ..landmarks.geometry import REGIONS, region_nme
from ..landmarks.predictor import default_predictor_path, get_landmarks, load_predictor
from ..metrics import psnr_y, ssim_y, to_tensor
from ..models import PRESETS, WeightsNotFoundError, load_model
from ..models.presets import weights_path
from ..pipeline import Upscaler
from ..progress import progress as progress_bar
from ..types import LANDMARK_MODES, check_landmark_mode
from ..weights import WEIGHTS_DIR, WeightsError, file_sha256, read_metadata, shipped_names

__all__ = ["HR_SIZE", "LPIPS_NOTE", "Face", "ModelSkipped", "bicubic_batch", "bicubic_up", "fer_probs", "fer_summary",
           "load_faces", "resolve_models", "run_evaluation"]

LPIPS_NOTE = "LPIPS: n/a (no offline weights)"
HR_SIZE = 128


class ModelSkipped(Exception):
    """A model that cannot be evaluated (no weights, wrong scale, unreadable file)."""


@dataclass
class Face:
    id: str
    hr: np.ndarray  # S x S x 3 uint8
    label: str = ""
    lm_hr: np.ndarray | None = None  # 478 x 3 normalised, NaN where not found
    lm_lr: np.ndarray | None = None  # from a cache (MediaPipe on the LR crop), else None
    extra: dict = field(default_factory=dict)


# --- data ------------------------------------------------------------------------------------------


def load_faces(data: str | Path, scale: int, split: str = "auto", limit: int | None = None,
               progress: bool = True) -> tuple[list[Face], dict]:
    """Faces of ``data`` (cache, labels.csv folder or image folder) and a description with skip counts."""
    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(f"--data {data}: not a folder")
    if (data / "index.json").is_file():
        sp = None if split == "all" else ("test" if split == "auto" else split)
        ds = FaceCache(data, split=sp, limit=limit)
        lr_key = f"lm_lr{scale}"
        faces = [Face(str(ds.path[i]).split("/", 1)[-1], ds.hr[i], str(ds.label_name[i]), ds.lm_hr[i],
                      ds.arrays[lr_key][i] if lr_key in ds.arrays else None) for i in range(len(ds))]
        return faces, {"layout": "cache", "split": sp or "all", "inputs": len(faces), "skipped": []}

    recs, layout = discover(data)
    if split == "auto":  # explicit splits (labels.csv, CelebA): the test split; a plain folder: every image
        sp = "test" if layout != "folder" else "all"
    else:
        sp = split
    if sp != "all":
        recs = [r for r in recs if r.split == sp]
    if limit is not None:
        recs = recs[:limit]
    if not recs:
        raise ValueError(f"--data {data}: no images{'' if sp == 'all' else f' in split {sp!r}'}")
    cfg = PrepareConfig(size=HR_SIZE, margin=0.6, lr_scales=(scale,))
    faces, skipped = [], []
    for r in progress_bar(recs, desc="crop faces", unit="img", enabled=progress):
        res = process_image(r, cfg)
        if "skip" in res:
            skipped.append([r.rel, res["skip"]])
            continue
        faces.append(Face(r.rel, res["hr"], r.label, res["lm_hr"], res.get(f"lm_lr{scale}")))
    return faces, {"layout": layout, "split": sp, "inputs": len(recs), "skipped": skipped}


# --- models ----------------------------------------------------------------------------------------


def resolve_models(names: list[str], scale: int, device: torch.device) -> tuple[dict, dict]:
    """({name: nn.Module or None for bicubic}, {name: reason skipped}).

    A name is ``bicubic``, a preset with shipped weights, a ``.safetensors`` path, or ``LABEL=PATH``.
    """
    models, skipped = {}, {}
    for entry in names:
        # LABEL=PATH.safetensors names a weights file in the tables (ablations, your own runs)
        name, sep, source = entry.partition("=")
        source = source if sep else name
        if name in models or name in skipped:
            continue
        if name == "bicubic":
            models[name] = None
            continue
        try:
            if source in PRESETS and weights_path(source) is None:
                raise ModelSkipped(f"no trained weights ship for preset {source!r} (untrained: skipped)")
            try:
                net = load_model(source, device=device)
            except WeightsError:  # a damaged file the user named is an error, not a row to skip
                raise
            except (WeightsNotFoundError, ValueError, OSError) as e:
                raise ModelSkipped(str(e)) from e
            if getattr(net, "scale", None) != scale:
                raise ModelSkipped(f"{name!r} upscales x{getattr(net, 'scale', '?')}, not x{scale}")
            net.name, net.trained = name, True
            net.trained_with = emotion_loss_classifier(weights_path(source) if source in PRESETS else source)
            models[name] = net
        except ModelSkipped as e:
            skipped[name] = str(e)
    return models, skipped


def emotion_loss_classifier(path: str | Path | None) -> str | None:
    """The FER classifier a weights file's emotion loss trained against (from its ``train_config``), or None.

    Files trained before the classifier was recorded name none: the -lite presets' cards say they
    used ``fer-mini-xception`` (passed explicitly), so that is what such a file is taken to have used.
    An empty name in a file that has the field meant the default of its time, ``fer-mini-xception-ft``.
    """
    if path is None:
        return None
    try:
        tc = json.loads(read_metadata(path, "sr").get("train_config", "{}"))
    except (ValueError, OSError):
        return None
    if float(tc.get("lambda_emo", 0) or 0) <= 0:
        return None
    if "classifier" not in tc:
        return "fer-mini-xception"
    return _classifier_key(tc["classifier"] or "fer-mini-xception-ft")


def _classifier_key(name: str) -> str:
    """``fer-x``, ``fer-x.safetensors`` and ``/path/fer-x.safetensors`` name the same classifier."""
    return Path(name).name.removesuffix(".safetensors")


def _family(name: str) -> set[str]:
    """The classifiers a FER classifier's outputs come from: itself (a ``-ft`` fine-tune counts as the one without
    the suffix) and, for an ensemble, the shipped classifiers it averages (its recipe names each member by sha256;
    fer-teacher-vgg2 averages fer-teacher-vgg and another VGG)."""
    key = _classifier_key(name)
    out = {key.removesuffix("-ft")}
    path = Path(name) if Path(name).suffix == ".safetensors" else WEIGHTS_DIR / f"{key}.safetensors"
    try:
        recipe = json.loads(read_metadata(path, "classifier").get("recipe", "{}")) if path.is_file() else {}
    except (ValueError, OSError, WeightsError):
        recipe = {}
    digests = {m.get("sha256") for m in recipe.get("members", []) if isinstance(m, dict)} - {None}
    if digests:
        out |= {n.removesuffix("-ft") for n in shipped_names("fer-")
                if file_sha256(WEIGHTS_DIR / f"{n}.safetensors") in digests}
    return out


def _same_family(a: str, b: str) -> bool:
    """Judging with ``b`` a model whose emotion loss read ``a`` is judging with the trainer: the same classifier, a
    fine-tune of it (``-ft``), or an ensemble that holds it (either way round)."""
    return bool(_family(a) & _family(b))


def bicubic_up(lr: np.ndarray, scale: int) -> np.ndarray:
    """PIL bicubic upscaling of one uint8 image: the baseline every table compares with."""
    h, w = lr.shape[:2]
    return resize(lr, (w * scale, h * scale))


def bicubic_batch(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """:func:`bicubic_up` of a ``B x 3 x h x w`` batch in [0, 1] (rounded to uint8 first, as a saved image)."""
    out = [bicubic_up(img, scale) for img in (lr.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0


# --- scores ----------------------------------------------------------------------------------------


def fer_probs(clf: EmotionClassifier, images: torch.Tensor) -> torch.Tensor:
    """FER probabilities ``B x C`` of a ``B x 3 x H x W`` batch in [0, 1] (on the batch's device)."""
    return F.softmax(clf(images)[0], 1)


def fer_summary(p_ref: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """How well ``p`` (N x C FER distributions of SR faces) keeps the expression of ``p_ref`` (their HR faces):
    ECM (lower is better), top-label agreement and mean KL(p_ref || p)."""
    return {"ecm": float(ecm(p_ref, p)), "agreement": float(label_agreement(p_ref, p)), "kl": float(mean_kl(p_ref, p))}


def _mean(v) -> float | None:
    v = [x for x in v if x is not None and np.isfinite(x)]
    return float(np.mean(v)) if v else None


def _accuracy(p: np.ndarray, lab: np.ndarray) -> float | None:
    has = lab >= 0
    return float((p[has].argmax(1) == lab[has]).mean()) if has.any() else None


def _identity_encoder() -> tuple[IdentityEncoder | None, str]:
    try:
        return IdentityEncoder(), ""
    except IdentityModelMissing as e:
        return None, f"identity: n/a ({e})"


def run_evaluation(faces: list[Face], models: dict, scale: int, landmarks: str = "auto", device: str = "cpu",
                   judge: str | None = None, teacher: str | None = None, identity: bool = True,
                   progress: bool = True, keep: int = 4) -> dict:
    """Metrics per model on faces through the pipeline's :meth:`~affectsr.pipeline.Upscaler.super_resolve`.

    Returns {'rows': per-image dicts, 'models': summaries, 'examples': images for the grid,
    'probs': the judge's FER probabilities per face of the HR faces ('hr') and of each model's output,
    'teacher_probs': the same under the teacher (empty without one), 'judge', 'teacher', 'notes'}.
    ``landmarks``: detect, predict, auto or none (LR landmarks from a cache are used where it has them).
    ``identity``: dlib descriptors SR vs HR (skipped with a note when dlib is not installed).
    """
    check_landmark_mode(landmarks, (*LANDMARK_MODES, "none"))
    dev = torch.device(device)
    det = shared_detector()
    clf, tea = load_fer_pair(judge, teacher, dev)
    labels = tuple(clf.labels)
    for name, net in models.items():  # the judge is never the trainer
        trained_with = getattr(net, "trained_with", None) if net is not None else None
        if trained_with and _same_family(trained_with, clf.name):
            raise ValueError(f"the judge {clf.name!r} is (a fine-tune of) {trained_with!r}, the classifier {name!r}'s "
                             "emotion loss trained against; pick another --judge")
    notes = []
    enc = None
    if identity:
        enc, why = _identity_encoder()
        if why:
            notes.append(why)
    predictor = None
    if landmarks in ("predict", "auto") and any(m is not None for m in models.values()):
        path = default_predictor_path(scale)
        if path is None and landmarks == "predict":
            raise ValueError(f"no landmark predictor ships for x{scale}; use --landmarks detect")
        predictor = load_predictor(path, dev) if path is not None else None
    ups = {}
    for name, net in models.items():
        if net is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ups[name] = Upscaler(scale, net, str(dev), detector=det, landmarks="detect")

    hr = np.stack([f.hr for f in faces])
    lrs = [np.array(bicubic_down(f.hr, scale)) for f in faces]  # writable copies (torch.from_numpy)
    lr_lms, routes = [], []
    if ups:
        for f, lr in zip(faces, lrs):
            if landmarks == "none":
                lm, route = None, "none"
            elif f.lm_lr is not None and np.isfinite(f.lm_lr).all() and landmarks in ("detect", "auto"):
                lm, route = f.lm_lr, "detect"
            else:
                lm, route = get_landmarks(lr, landmarks, det, predictor)
            lr_lms.append(lm)
            routes.append(route)
    lm_hr = np.stack([f.lm_hr if f.lm_hr is not None else np.full((NUM_LANDMARKS, 3), np.nan, np.float32) for f in faces])
    if any(f.lm_hr is None for f in faces):
        missing = [i for i, f in enumerate(faces) if f.lm_hr is None]
        found_lm, _ = det.detect_landmarks([faces[i].hr for i in missing])
        lm_hr[missing] = found_lm
    hr_found = np.isfinite(lm_hr).all(axis=(1, 2))
    p_hr = classify_crops(clf, list(hr))
    t_hr = classify_crops(tea, list(hr)) if tea is not None else None
    lab = np.array([labels.index(f.label) if f.label in labels else -1 for f in faces])
    hr_t = to_tensor(hr)
    if enc is not None:  # the HR face's dlib box is reused on every SR face: same crop geometry by construction
        rects = [enc.face_rect(f.hr) for f in faces]
        emb_hr = enc.embed(list(hr), rects)

    rows, summaries, examples = [], {}, {"lr": lrs[:keep], "hr": list(hr[:keep]), "ids": [f.id for f in faces[:keep]]}
    probs = {"hr": p_hr}  # the judge's FER distributions per face, for callers that break the metrics down (fairness)
    teacher_probs = {"hr": t_hr} if t_hr is not None else {}
    total = len(faces) * len(models)
    bar = progress_bar(total=total, desc=f"evaluate x{scale}", unit="face", enabled=progress)
    try:
        for name, net in models.items():
            srs = []
            for i, lr in enumerate(lrs):
                srs.append(bicubic_up(lr, scale) if net is None else ups[name].super_resolve(lr, lr_lms[i], notes))
                bar.update(1)
            sr = np.stack(srs)
            sr_t = to_tensor(sr)
            ps = psnr_y(sr_t, hr_t, scale).numpy().astype(float)
            ss = ssim_y(sr_t, hr_t, scale).numpy().astype(float)
            p_sr = classify_crops(clf, list(sr))
            probs[name] = p_sr
            t_sr = classify_crops(tea, list(sr)) if tea is not None else None
            if t_sr is not None:
                teacher_probs[name] = t_sr
            lm_sr, sr_found = det.detect_landmarks(list(sr))
            ok = sr_found & hr_found
            err = {k: np.full(len(faces), np.nan) for k in ("face", *REGIONS)}
            if ok.any():
                for k, v in region_nme(lm_sr[ok], lm_hr[ok]).items():
                    err[k][ok] = v
            ident = identity_scores(enc.embed(list(sr), rects), emb_hr) if enc is not None else None
            for i, f in enumerate(faces):
                row = {
                    "image": f.id, "model": name, "label": f.label, "psnr": round(float(ps[i]), 4),
                    "ssim": round(float(ss[i]), 6), "hr_pred": labels[int(p_hr[i].argmax())],
                    "sr_pred": labels[int(p_sr[i].argmax())], "agree": int(p_hr[i].argmax() == p_sr[i].argmax()),
                    "p_hr_top": round(float(p_hr[i].max()), 4), "p_sr_of_hr_top": round(float(p_sr[i][p_hr[i].argmax()]), 4),
                    "teacher_hr_pred": "", "teacher_sr_pred": "", "teacher_agree": "",
                    "nme": "" if not np.isfinite(err["face"][i]) else round(float(err["face"][i]), 5),
                    **{f"nme_{k}": "" if not np.isfinite(err[k][i]) else round(float(err[k][i]), 5) for k in REGIONS},
                    "identity_cos": "" if ident is None else round(float(ident.cosine[i]), 4),
                    "identity_dist": "" if ident is None else round(float(ident.distance[i]), 4),
                    "lr_landmarks": "" if net is None else routes[i],
                }
                if t_sr is not None:
                    row.update(teacher_hr_pred=labels[int(t_hr[i].argmax())], teacher_sr_pred=labels[int(t_sr[i].argmax())],
                               teacher_agree=int(t_hr[i].argmax() == t_sr[i].argmax()))
                rows.append(row)
            judged = fer_summary(p_hr, p_sr)
            taught = fer_summary(t_hr, t_sr) if t_sr is not None else {"ecm": None, "agreement": None, "kl": None}
            summaries[name] = {
                "psnr": float(ps.mean()), "ssim": float(ss.mean()), "lpips": None,
                # ecm / agreement / kl / accuracy_* are the judge's (the default reading); judge_* say so explicitly
                **judged, "judge": clf.name, **{f"judge_{k}": v for k, v in judged.items()},
                "accuracy_sr": _accuracy(p_sr, lab), "accuracy_hr": _accuracy(p_hr, lab),
                "teacher": tea.name if tea is not None else None, **{f"teacher_{k}": v for k, v in taught.items()},
                "trained_with": getattr(net, "trained_with", None),  # the classifier its emotion loss used
                "teacher_accuracy_sr": _accuracy(t_sr, lab) if t_sr is not None else None,
                "teacher_accuracy_hr": _accuracy(t_hr, lab) if t_hr is not None else None,
                "nme": _mean(err["face"][ok]) if ok.any() else None,
                **{f"nme_{k}": _mean(err[k][ok]) if ok.any() else None for k in REGIONS}, "nme_n": int(ok.sum()),
                "nme_excluded": {"hr_not_found": int((~hr_found).sum()), "sr_not_found": int((hr_found & ~sr_found).sum())},
                **(ident.summary() if ident is not None else
                   {"identity_cosine": None, "identity_distance": None, "identity_kept": None}),
                "n_labelled": int((lab >= 0).sum()), "n": len(faces),
                "broken_faces": 0 if net is None else ups[name].broken_faces,  # SR output NaN/flat: bicubic used
            }
            examples[name] = srs[:keep]
    finally:
        bar.close()
    return {"rows": rows, "models": summaries, "examples": examples, "probs": probs, "teacher_probs": teacher_probs,
            "ids": [f.id for f in faces], "judge": clf.name, "teacher": tea.name if tea is not None else None, "notes": notes,
            "classifier": clf.name}
