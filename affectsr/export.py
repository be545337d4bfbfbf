"""ONNX export of any affectsr SR model, and an ONNX Runtime backend the pipeline can use unchanged.

    affectsr export --model affectsr-x4-lite --format onnx -o affectsr-x4-lite.onnx

The graph (``torch.onnx.export(dynamo=False)``, the TorchScript exporter: it needs no
``onnxscript`` and handles the traced shape arithmetic of the spatial prior) has inputs
``lr`` (B x 3 x H x W RGB in [0, 1]; batch, height and width dynamic) and, for models with a
landmark prior, ``landmarks`` (B x 478 x 3, x and y normalised to ``lr``); output ``sr``
(B x 3 x sH x sW, not clamped, exactly what the PyTorch model returns). The NaN convention of
AffectSRNet is kept *inside* the graph: a landmark row with any NaN means "no landmarks" and
that face takes the image path alone, so :class:`OnnxSRModel` feeds an all-NaN tensor for
``landmarks=None``. Every export is checked with ``onnx.checker`` and against PyTorch on
random and real inputs (batch 1 and 3, a NaN row, no landmarks, another spatial size, the
bundled face): a max abs difference over ``ATOL`` (1e-3) raises and nothing is written.

The model's name, architecture, config JSON, scale and weights hash travel in the file's
``metadata_props`` (keys ``affectsr.*``), so an ``.onnx`` file is self-describing.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import io
import json
import math
import os
import sys
import tempfile
import time
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .atomic import atomic_write

if TYPE_CHECKING:
    from .bench import BenchRow

__all__ = [
    "ATOL", "DEFAULT_OPSET", "ExportError", "ExportReport", "OnnxSRModel", "add_parser", "bench_onnx",
    "bench_ort_options", "cmd_export", "cpu_cost", "default_cache_dir", "export_onnx", "load_onnx_model", "onnx_for",
    "parity", "uses_landmarks",
]

DEFAULT_OPSET = 20  # the newest opset torch 2.13's TorchScript exporter writes; onnxruntime >= 1.18 runs it
MIN_OPSET = 11  # ONNX Resize matches PyTorch's interpolation only from opset 11 (IsInf/IsNaN need 10)
ATOL = 1e-3  # max |ORT - PyTorch| an export may differ by (outputs are images in [0, 1])
FORMAT = "affectsr-onnx/1"  # bump when the graph's inputs/outputs or metadata change (also keys the cache)
INSTALL_HINT = "pip install affectsr[onnx]"
META = "affectsr."  # prefix of our metadata_props keys


class ExportError(RuntimeError):
    """The exported graph does not reproduce the PyTorch model (nothing was written)."""


def _require(module: str) -> Any:
    """Import onnx / onnxruntime, or say in one line how to get them."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{module} is not installed; ONNX export and the onnxruntime backend need it: "
                          f"{INSTALL_HINT}") from e


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and how closely ONNX Runtime reproduced PyTorch."""

    path: Path
    name: str
    arch: str
    scale: int
    in_size: int
    opset: int
    uses_landmarks: bool
    weights_sha256: str
    size_bytes: int
    seconds: float
    max_abs_diff: float | None  # worst |ORT - PyTorch| over ``checks``; None with check=False
    checks: dict[str, float] = field(default_factory=dict)  # case -> max abs diff
    exporter: str = "torch.onnx.export(dynamo=False)"


# --- what a model is ---------------------------------------------------------------------------------


def uses_landmarks(model: nn.Module) -> bool:
    """Whether ``model`` reads landmarks (baselines and AffectSRNet with prior='none' do not)."""
    if getattr(getattr(model, "config", None), "prior", None) == "none":
        return False
    return bool(getattr(model, "uses_landmarks", True))


def _config_dict(model: nn.Module) -> tuple[str, dict]:
    """(arch name, config as a JSON-able dict); test doubles without a config give ({class name}, {})."""
    cfg = getattr(model, "config", None)
    arch = getattr(cfg, "arch", None) or type(model).__name__.lower()
    if cfg is None:
        return arch, {}
    d = cfg.to_dict() if hasattr(cfg, "to_dict") else dataclasses.asdict(cfg)
    return arch, json.loads(json.dumps(d))  # tuples -> lists, and fail here if not JSON-able


def _config_from(arch: str, d: dict) -> Any:
    """The config object back from metadata: the architecture's dataclass where this version knows it."""
    from .models.presets import ARCHITECTURES

    if arch in ARCHITECTURES:
        try:
            return ARCHITECTURES[arch][0](**d)
        except (TypeError, ValueError):  # written by another version: keep the values readable
            pass
    return types.SimpleNamespace(**d)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha256_state(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _weights_file(name: str) -> Path:
    """The safetensors file behind a preset name or path; WeightsNotFoundError when there is none."""
    from .models import PRESETS, WeightsNotFoundError
    from .models.presets import weights_path

    if name in PRESETS:
        p = weights_path(name)
        if p is None:
            raise WeightsNotFoundError(f"no trained weights ship for {name!r}; export a .safetensors file instead "
                                       f"(see `affectsr models`)")
        return p
    p = Path(name)
    if p.suffix != ".safetensors" or not p.is_file():
        raise WeightsNotFoundError(f"{name!r} is neither a preset ({', '.join(PRESETS)}) nor a .safetensors file")
    return p


def _resolve(model_or_name: nn.Module | str | Path) -> tuple[nn.Module, str, str, bool]:
    """(model on the CPU in fp32, name, weights sha256, trained)."""
    from .models import PRESETS, load_model

    if isinstance(model_or_name, nn.Module):
        net = model_or_name
        params = list(net.parameters())
        if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in params):
            net = copy.deepcopy(net).cpu().float()
        name = getattr(net, "name", None) or type(net).__name__
        return net, str(name), _sha256_state(net), bool(getattr(net, "trained", True))
    name = str(model_or_name)
    if name.endswith(".onnx"):
        raise ValueError(f"{name}: already an ONNX file; export takes a preset name or a .safetensors file")
    weights = _weights_file(name)
    from safetensors import SafetensorError

    try:
        net = load_model(name)
    except (SafetensorError, RuntimeError, KeyError, TypeError) as e:  # corrupt file, wrong tensors
        raise ValueError(f"{name}: cannot load these weights ({' '.join(str(e).split())[:200]})") from e
    label = name if name in PRESETS else weights.stem
    return net, label, _sha256_file(weights), True


# --- export ------------------------------------------------------------------------------------------


class _Graph(nn.Module):
    """The traced callable: ``(lr, landmarks)`` for prior models, ``(lr)`` for the others."""

    def __init__(self, net: nn.Module, with_landmarks: bool):
        super().__init__()
        self.net, self.with_landmarks = net, with_landmarks

    def forward(self, lr: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(lr, landmarks) if self.with_landmarks else self.net(lr)


def _random_landmarks(b: int, n: int, gen: torch.Generator) -> torch.Tensor:
    lm = torch.rand(b, n, 3, generator=gen)
    lm[..., :2] = 0.15 + 0.7 * lm[..., :2]  # inside the face crop, as detections are
    lm[..., 2] = (lm[..., 2] - 0.5) * 0.1  # MediaPipe's relative depth is small
    return lm


def _trace(net: nn.Module, with_landmarks: bool, num_landmarks: int, in_size: int, opset: int) -> bytes:
    gen = torch.Generator().manual_seed(0)
    lr = torch.rand(2, 3, in_size, in_size, generator=gen)
    args = (lr, _random_landmarks(2, num_landmarks, gen)) if with_landmarks else (lr,)
    names = ["lr", "landmarks"] if with_landmarks else ["lr"]
    axes = {"lr": {0: "batch", 2: "height", 3: "width"}, "sr": {0: "batch", 2: "sr_height", 3: "sr_width"}}
    if with_landmarks:
        axes["landmarks"] = {0: "batch"}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # the TorchScript exporter announces its deprecation; the tracer warns about shape checks
        # (e.g. AffectSRNet's landmarks-shape guard) that are constant in a graph with fixed 478 x 3 rows
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(_Graph(net, with_landmarks), args, buf, dynamo=False, opset_version=opset,
                          input_names=names, output_names=["sr"], dynamic_axes=axes, do_constant_folding=True)
    return buf.getvalue()


def _check_cases(net: nn.Module, with_landmarks: bool, num_landmarks: int, in_size: int,
                 detector=None) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """Named (lr, landmarks) inputs: dynamic batch, NaN rows, no landmarks, another size, a real face."""
    from .assets import default_face
    from .images import resize

    gen = torch.Generator().manual_seed(1)
    s, n = in_size, num_landmarks

    def lm(b: int) -> torch.Tensor | None:
        return _random_landmarks(b, n, gen) if with_landmarks else None

    cases = {"batch1": (torch.rand(1, 3, s, s, generator=gen), lm(1))}
    lr3, lm3 = torch.rand(3, 3, s, s, generator=gen), lm(3)
    if lm3 is not None:
        lm3[1] = float("nan")  # the middle face has no landmarks
        cases["batch3_nan_row"] = (lr3, lm3)
        cases["no_landmarks"] = (torch.rand(2, 3, s, s, generator=gen), None)
    else:
        cases["batch3"] = (lr3, None)
    h, w = s + 8, s + 4
    cases[f"size_{h}x{w}"] = (torch.rand(2, 3, h, w, generator=gen), lm(2))
    hr = default_face(128)
    real = torch.from_numpy(resize(hr, (s, s))).permute(2, 0, 1)[None].float() / 255.0
    real_lm = None
    if with_landmarks:
        from .landmarks import LandmarkDetector

        det = detector or LandmarkDetector()
        try:
            found_lm, _found = det.detect_landmarks([hr])  # normalised: the same points on the LR face
        finally:
            if detector is None:
                det.close()
        real_lm = torch.from_numpy(found_lm)
    cases["real_face"] = (real, real_lm)
    return cases


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return math.inf
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return float(d.max()) if np.isfinite(d).all() else math.inf


def export_onnx(model_or_name: nn.Module | str | Path, path: str | Path, opset: int = DEFAULT_OPSET,
                check: bool = True, overwrite: bool = False, detector=None) -> ExportReport:
    """Export a model (preset name, ``.safetensors`` path or ``nn.Module``) to ``path``, atomically.

    ``check``: ``onnx.checker`` plus ORT-vs-PyTorch on the cases of :func:`_check_cases`; any
    difference over ``ATOL`` raises :class:`ExportError` before anything is written. ``detector``:
    a LandmarkDetector to reuse for the real-face case (one is made and closed otherwise).
    """
    onnx = _require("onnx")
    _require("onnxruntime")
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give the .onnx file to write")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (use overwrite=True or --overwrite to replace it)")
    if not MIN_OPSET <= opset <= DEFAULT_OPSET:
        raise ValueError(f"opset must be {MIN_OPSET}..{DEFAULT_OPSET}, got {opset}")
    start = time.perf_counter()
    net, name, sha, trained = _resolve(model_or_name)
    scale = int(net.scale)
    arch, cfg = _config_dict(net)
    in_size = int(cfg.get("in_size", 128 // scale))
    with_lm = uses_landmarks(net)
    num_landmarks = int(getattr(net, "num_landmarks", 478))

    proto = onnx.load_from_string(_trace(net, with_lm, num_landmarks, in_size, opset))
    from . import __version__

    meta = {
        "format": FORMAT, "name": name, "arch": arch, "config": json.dumps(cfg), "scale": str(scale),
        "in_size": str(in_size), "uses_landmarks": "1" if with_lm else "0", "num_landmarks": str(num_landmarks),
        "weights_sha256": sha, "trained": "1" if trained else "0", "affectsr_version": __version__,
        "torch_version": torch.__version__,
    }
    onnx.helper.set_model_props(proto, {META + k: v for k, v in meta.items()})
    proto.doc_string = (f"affectsr {name} x{scale}: lr B x 3 x H x W RGB in [0, 1]"
                        + (f"; landmarks B x {num_landmarks} x 3 normalised to lr, a row with NaN = no landmarks"
                           if with_lm else "") + "; sr = the unclamped PyTorch output")
    data = proto.SerializeToString()

    checks: dict[str, float] = {}
    if check:
        onnx.checker.check_model(proto, full_check=True)
        runtime = OnnxSRModel(data)
        for case, (lr, lm) in _check_cases(net, with_lm, num_landmarks, in_size, detector).items():
            with torch.no_grad():
                ref = (net(lr, lm) if with_lm else net(lr)).numpy()
                got = runtime(lr, lm).numpy()
            checks[case] = _max_abs_diff(got, ref)
        worst_case = max(checks, key=checks.get)
        if checks[worst_case] > ATOL:
            raise ExportError(f"{name}: ONNX Runtime differs from PyTorch by {checks[worst_case]:.3g} "
                              f"(> {ATOL}) on case {worst_case!r}; nothing written")

    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return ExportReport(path, name, arch, scale, in_size, opset, with_lm, sha, len(data),
                        time.perf_counter() - start, max(checks.values()) if checks else None, checks)


# --- runtime -----------------------------------------------------------------------------------------


OPTIMIZATION = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


class OnnxSRModel(nn.Module):
    """An exported model run by ONNX Runtime (CPU), with the call signature of the PyTorch models.

    ``forward(lr, landmarks=None)`` takes and returns torch tensors (on the input's device), so
    ``Upscaler(model=OnnxSRModel(path))`` works unchanged. It has no torch parameters.
    Defaults, each measured in docs/ONNX.md: ``threads`` = ``torch.get_num_threads()``;
    ``optimization="all"`` (ORT_ENABLE_ALL: its NCHWc conv layouts are what beat eager PyTorch);
    ``spin=False``: idle worker threads sleep instead of busy-waiting, which costs little on an
    idle machine and a lot on a shared one (and would steal the CPU from MediaPipe between faces).
    """

    backend = "onnxruntime"

    def __init__(self, source: str | Path | bytes, threads: int | None = None, optimization: str = "all",
                 spin: bool = False):
        super().__init__()
        ort = _require("onnxruntime")
        if optimization not in OPTIMIZATION:
            raise ValueError(f"optimization must be one of {', '.join(OPTIMIZATION)}, got {optimization!r}")
        if not isinstance(source, bytes):
            source = Path(source)
            if not source.is_file():
                raise FileNotFoundError(f"{source}: no such ONNX file")
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads or torch.get_num_threads())
        so.inter_op_num_threads = 1
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION[optimization])
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        so.log_severity_level = 3  # errors only
        where = "the exported graph" if isinstance(source, bytes) else str(source)
        try:
            self.session = ort.InferenceSession(source if isinstance(source, bytes) else str(source), so,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ValueError(f"{where}: not a readable ONNX model ({' '.join(str(e).split())[:200]})") from e
        meta = {k[len(META):]: v for k, v in self.session.get_modelmeta().custom_metadata_map.items()
                if k.startswith(META)}
        if meta.get("format") != FORMAT:
            raise ValueError(f"{where}: not an affectsr ONNX export (format {meta.get('format')!r}, "
                             f"expected {FORMAT!r}); make one with `affectsr export`")
        self.metadata = meta
        self.name = meta["name"]
        self.arch = meta["arch"]
        self.config = _config_from(self.arch, json.loads(meta["config"]))
        self._scale = int(meta["scale"])
        self.in_size = int(meta["in_size"])
        self.uses_landmarks = meta["uses_landmarks"] == "1"
        self.num_landmarks = int(meta["num_landmarks"])
        self.trained = meta["trained"] == "1"
        self.weights_sha256 = meta["weights_sha256"]
        self.input_names = [i.name for i in self.session.get_inputs()]

    @property
    def scale(self) -> int:
        return self._scale

    def forward(self, lr: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        if lr.ndim != 4 or lr.shape[1] != 3:
            raise ValueError(f"lr must be B x 3 x H x W, got {tuple(lr.shape)}")
        feeds = {"lr": lr.detach().to("cpu", torch.float32).contiguous().numpy()}
        if "landmarks" in self.input_names:
            b, n = lr.shape[0], self.num_landmarks
            if landmarks is None:
                lm = np.full((b, n, 3), np.nan, np.float32)  # the graph's "no landmarks" convention
            else:
                if tuple(landmarks.shape) != (b, n, 3):
                    raise ValueError(f"landmarks must be {b} x {n} x 3, got {tuple(landmarks.shape)}")
                lm = landmarks.detach().to("cpu", torch.float32).contiguous().numpy()
            feeds["landmarks"] = lm
        out = self.session.run(["sr"], feeds)[0]
        return torch.from_numpy(out).to(lr.device, lr.dtype)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, arch={self.arch!r}, scale={self.scale}, uses_landmarks={self.uses_landmarks}"


def default_cache_dir() -> Path:
    """Where :func:`onnx_for` keeps exports: ``$XDG_CACHE_HOME/affectsr/onnx`` (``~/.cache/affectsr/onnx``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "affectsr" / "onnx"


def onnx_for(name_or_path: str | Path, cache_dir: str | Path | None = None, opset: int = DEFAULT_OPSET,
             detector=None) -> Path:
    """The ONNX file for a preset or ``.safetensors`` (exported and checked on first use), or a ``.onnx`` path.

    Cache files are ``<name>-<sha>.onnx`` with ``sha`` over the weights file, ``FORMAT`` and the
    opset, so new weights or a new export format never reuse a stale graph.
    """
    p = Path(str(name_or_path))
    if p.suffix == ".onnx":
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such ONNX file")
        return p
    weights = _weights_file(str(name_or_path))
    key = hashlib.sha256(f"{_sha256_file(weights)}|{FORMAT}|opset{opset}".encode()).hexdigest()[:16]
    from .models import PRESETS

    stem = str(name_or_path) if str(name_or_path) in PRESETS else weights.stem
    out = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = out / f"{stem}-{key}.onnx"
    if not out.is_file():  # overwrite=True: a concurrent first use writes the same bytes
        export_onnx(str(name_or_path), out, opset=opset, check=True, overwrite=True, detector=detector)
    return out


def load_onnx_model(model: str | Path | None = None, scale: int | None = None,
                    cache_dir: str | Path | None = None) -> OnnxSRModel:
    """The onnxruntime backend of ``affectsr upscale``: a preset / ``.safetensors`` / ``.onnx``, or the
    default preset of ``scale`` (x4 when neither is given), as an :class:`OnnxSRModel`."""
    from .models.presets import default_model

    name = model or default_model(scale or 4)
    if name is None:
        raise ValueError(f"scale must be 4 or 8 for the default models, got {scale}")
    net = OnnxSRModel(onnx_for(name, cache_dir))
    if scale is not None and net.scale != scale:
        raise ValueError(f"model {net.name!r} upscales x{net.scale}, but scale={scale} was asked")
    return net


# --- speed and parity --------------------------------------------------------------------------------


def bench_onnx(names: list[str] | None = None, batches: list[int] | None = None,
               min_time: float = 2.0) -> list[BenchRow]:
    """faces/s of each preset through ONNX Runtime (random weights: speed does not depend on them).

    Rows are :class:`affectsr.bench.BenchRow` with stage "model" and device "cpu-onnxruntime",
    timed like :func:`affectsr.bench.bench_models` (same inputs, warm-up, ``min_time``).
    """
    from .bench import BenchRow, time_it
    from .models import PRESETS, count_params, create_model

    names = names or list(PRESETS)
    rows = []
    gen = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="affectsr-onnx-bench-") as tmp:
        for name in names:
            net = create_model(name).eval()
            report = export_onnx(net, Path(tmp) / f"{name}.onnx", check=False)
            runtime = OnnxSRModel(report.path)
            cfg = net.config
            for b in batches or [1, 8]:
                lr = torch.rand(b, 3, cfg.in_size, cfg.in_size, generator=gen)
                lm = torch.rand(b, getattr(net, "num_landmarks", 478), 3, generator=gen)
                t = time_it(lambda r=runtime, x=lr, y=lm: r(x, y), min_time)
                rows.append(BenchRow(name, "model", "cpu-onnxruntime", b, cfg.in_size, cfg.scale,
                                     count_params(net), t * 1e3, b / t))
    return rows


def parity(names: list[str], faces: list, progress: bool = True) -> list[dict]:
    """PyTorch vs ONNX Runtime on real faces through ``Upscaler.super_resolve`` (the path users get).

    ``faces``: :class:`affectsr.evaluate.Face` (HR crops; LR = bicubic /scale). Landmarks: the face's
    MediaPipe LR landmarks where it has them, else the pipeline's 'auto' route (MediaPipe, else the
    learned predictor). Per model: mean PSNR-Y vs HR for each backend, the lowest PSNR-Y of ORT vs
    PyTorch (148 dB = identical uint8 images) and the largest uint8 difference.
    """
    from tqdm import tqdm

    from .data.degrade import bicubic_down
    from .landmarks import LandmarkDetector
    from .landmarks.predictor import (
        default_predictor_path,
        get_landmarks,
        load_predictor,
    )
    from .metrics import psnr_y, to_tensor
    from .models import load_model
    from .pipeline import Upscaler

    out = []
    with LandmarkDetector() as det:
        for name in names:
            torch_net = load_model(name)
            ort_net = OnnxSRModel(onnx_for(name, detector=det))
            s = torch_net.scale
            pred_path = default_predictor_path(s)
            predictor = load_predictor(pred_path) if pred_path is not None else None
            ups = [Upscaler(s, m, "cpu", detector=det, landmarks="detect") for m in (torch_net, ort_net)]
            srs: list[list[np.ndarray]] = [[], []]
            routes: dict[str, int] = {}
            for f in tqdm(faces, desc=f"parity {name}", unit="face", disable=not progress or None, file=sys.stderr):
                lr = np.array(bicubic_down(f.hr, s))
                if f.lm_lr is not None and np.isfinite(f.lm_lr).all():
                    lm, route = f.lm_lr, "detect"
                else:
                    lm, route = get_landmarks(lr, "auto", det, predictor)
                routes[route] = routes.get(route, 0) + 1
                for k, up in enumerate(ups):
                    srs[k].append(up.super_resolve(lr, lm))
            hr = to_tensor(np.stack([f.hr for f in faces]))
            a, b = (to_tensor(np.stack(x)) for x in srs)
            out.append({
                "model": name, "faces": len(faces), "scale": s, "landmark_routes": routes,
                "psnr_torch": float(psnr_y(a, hr, s).mean()), "psnr_ort": float(psnr_y(b, hr, s).mean()),
                "psnr_ort_vs_torch_min": float(psnr_y(b, a, s).min()),
                "max_uint8_diff": int(np.abs(np.stack(srs[0]).astype(int) - np.stack(srs[1]).astype(int)).max()),
            })
    return out


def cpu_cost(names: list[str], batches: list[int] | None = None, min_cpu_time: float = 2.0) -> list[dict]:
    """Faces per CPU-second of each preset, PyTorch vs ONNX Runtime, one thread each.

    Process CPU time does not advance while other jobs hold the cores, so unlike wall-clock
    faces/s this stays meaningful on a shared machine (it is the single-core speed of an idle core,
    up to cache effects). Best of two rounds per row.
    """
    from .models import create_model

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = []
    try:
        with tempfile.TemporaryDirectory(prefix="affectsr-onnx-cpu-") as tmp:
            for name in names:
                net = create_model(name).eval()
                ort_net = OnnxSRModel(export_onnx(net, Path(tmp) / f"{name}.onnx", check=False).path, threads=1)
                s, n = net.config.in_size, getattr(net, "num_landmarks", 478)
                gen = torch.Generator().manual_seed(0)
                for b in batches or [1, 8]:
                    lr, lm = torch.rand(b, 3, s, s, generator=gen), _random_landmarks(b, n, gen)
                    for backend, m in (("torch", net), ("onnxruntime", ort_net)):
                        best = 0.0
                        for _ in range(2):
                            with torch.inference_mode():
                                m(lr, lm)  # warm-up
                                calls, t0 = 0, time.process_time()
                                while (used := time.process_time() - t0) < min_cpu_time:
                                    m(lr, lm)
                                    calls += 1
                            best = max(best, b * calls / used)
                        out.append({"model": name, "backend": backend, "batch": b, "faces_per_cpu_s": best})
    finally:
        torch.set_num_threads(before)
    return out


def bench_ort_options(name: str = "affectsr-x4-lite", batches: list[int] | None = None, min_time: float = 2.0,
                      rounds: int = 2) -> list[dict]:
    """faces/s of one trained preset under each ONNX Runtime setting (best of ``rounds`` interleaved rounds,
    so a load change hits every variant), and PSNR-Y vs HR on the bundled face for each graph."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .assets import default_face
    from .bench import time_it
    from .data.degrade import bicubic_down
    from .landmarks import LandmarkDetector
    from .metrics import psnr_y, to_tensor

    fp32 = onnx_for(name)
    with tempfile.TemporaryDirectory(prefix="affectsr-int8-") as tmp:
        int8 = Path(tmp) / "int8.onnx"
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
        variants = {
            "fp32, ORT_ENABLE_ALL, no spinning (default)": OnnxSRModel(fp32),
            "fp32, ORT_ENABLE_ALL, spinning": OnnxSRModel(fp32, spin=True),
            "fp32, ORT_ENABLE_EXTENDED": OnnxSRModel(fp32, optimization="extended"),
            "fp32, ORT_ENABLE_BASIC": OnnxSRModel(fp32, optimization="basic"),
            "int8 dynamic quantisation, ORT_ENABLE_ALL": OnnxSRModel(int8),
        }
        s = variants[next(iter(variants))].scale
        hr = default_face(128)
        lr_np = bicubic_down(hr, s)
        with LandmarkDetector() as det:
            lm_np, _ = det.detect_landmarks([lr_np])
        face, face_lm = to_tensor(lr_np), torch.from_numpy(lm_np)
        psnr = {k: float(psnr_y(m(face, face_lm).clamp(0, 1), to_tensor(hr), s)[0]) for k, m in variants.items()}
        in_size = variants[next(iter(variants))].in_size
        gen = torch.Generator().manual_seed(0)
        best: dict[tuple[str, int], float] = {}
        for _ in range(rounds):
            for b in batches or [1, 8]:
                lr, lm = torch.rand(b, 3, in_size, in_size, generator=gen), _random_landmarks(b, 478, gen)
                for k, m in variants.items():
                    t = time_it(lambda f=m, x=lr, y=lm: f(x, y), min_time)
                    best[k, b] = max(best.get((k, b), 0.0), b / t)
    return [{"variant": k, "batch": b, "faces_per_s": v, "psnr_y_bundled_face": psnr[k]} for (k, b), v in best.items()]


# --- command line ------------------------------------------------------------------------------------


def add_parser(subparsers) -> argparse.ArgumentParser:
    e = subparsers.add_parser("export", help="export a model to ONNX (checked against PyTorch)",
                              description="Export a model to ONNX: dynamic batch and size, checked with "
                                          "onnx.checker and against PyTorch to 1e-3.")
    e.add_argument("--model", required=True, help="preset with shipped weights, or a .safetensors file")
    e.add_argument("--format", choices=("onnx",), default="onnx", help="only onnx for now")
    e.add_argument("-o", "--output", required=True, metavar="FILE", help="the .onnx file to write")
    e.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset {MIN_OPSET}..{DEFAULT_OPSET} (default {DEFAULT_OPSET})")
    e.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    e.add_argument("--no-check", action="store_true", help="skip onnx.checker and the comparison with PyTorch")
    e.set_defaults(func=cmd_export)
    return e


def _err(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def cmd_export(args: argparse.Namespace) -> int:
    from .models import WeightsNotFoundError

    out = Path(args.output)
    try:
        _require("onnx")
        _require("onnxruntime")
    except ImportError as e:
        return _err(str(e))
    if out.suffix.lower() != ".onnx":
        return _err(f"-o {out}: give a file name ending in .onnx")
    if out.is_dir():
        return _err(f"-o {out}: is a folder; give the .onnx file to write")
    if out.exists() and not args.overwrite:
        return _err(f"-o {out}: exists (use --overwrite to replace it)")
    if not MIN_OPSET <= args.opset <= DEFAULT_OPSET:
        return _err(f"--opset {args.opset}: must be {MIN_OPSET}..{DEFAULT_OPSET}")
    try:
        _weights_file(args.model)
    except WeightsNotFoundError as e:
        return _err(f"--model {e}")
    try:  # fail before tracing if the folder cannot be written
        out.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out.parent).close()
    except OSError as e:
        return _err(f"-o {out}: cannot write there ({e.strerror or e})")
    try:
        rep = export_onnx(args.model, out, opset=args.opset, check=not args.no_check, overwrite=args.overwrite)
    except (ValueError, OSError) as e:
        return _err(str(e))
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    inputs = "lr, landmarks (NaN row = none)" if rep.uses_landmarks else "lr"
    print(f"wrote {rep.path} ({rep.size_bytes / 1e6:.1f} MB, opset {rep.opset}, x{rep.scale}, inputs: {inputs}; "
          f"batch, height and width dynamic)")
    if rep.max_abs_diff is not None:
        print(f"checked: onnx.checker ok; max |onnxruntime - pytorch| = {rep.max_abs_diff:.2e} over "
              f"{len(rep.checks)} cases ({', '.join(rep.checks)})")
    return 0


PARTS = ("speed", "cpu", "options", "parity")


def _compare_main(argv: list[str] | None = None) -> int:
    """``python -m affectsr.export compare``: the numbers of docs/ONNX.md.

    Parts: ``speed`` (wall-clock faces/s, PyTorch then ORT per model, same run), ``cpu`` (faces per
    CPU-second at one thread), ``options`` (ORT settings on affectsr-x4-lite), ``parity`` (PSNR of
    both backends on real faces).
    """
    import platform

    import onnxruntime

    from .assets import default_face
    from .bench import bench_models, to_markdown
    from .runinfo import machine
    from .evaluate import Face, load_faces
    from .models import PRESETS
    from .models.presets import weights_path

    p = argparse.ArgumentParser(prog="python -m affectsr.export compare",
                                description="PyTorch vs ONNX Runtime: speed, CPU cost, ORT settings, parity")
    p.add_argument("command", choices=("compare",))
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    p.add_argument("--models", default="affectsr-x4-lite,affectsr-x8-lite,rrdb-x4",
                   help="presets to time (default: the lite presets, and rrdb-x4 for the speed ratio)")
    p.add_argument("--batch", default="1,8")
    p.add_argument("--min-time", type=float, default=3.0, help="seconds (CPU seconds for cpu) per measurement")
    p.add_argument("--data", default=None, help="face folder for parity (default: the bundled face only)")
    p.add_argument("--limit", type=int, default=50, help="parity: at most this many faces of --data")
    p.add_argument("--threads", type=int, default=None, help="speed and options: threads (default: torch's)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    parts = [x for x in args.parts.split(",") if x]
    if unknown := set(parts) - set(PARTS):
        p.error(f"--parts: unknown {sorted(unknown)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n in args.models.split(",") if n]
    batches = [int(b) for b in args.batch.split(",")]
    load = os.getloadavg()[0]
    print(f"{machine()}; onnxruntime {onnxruntime.__version__}, {platform.machine()}; "
          f"1-min load average at the start: {load:.2f}\n", flush=True)
    blob: dict[str, Any] = {"machine": machine(), "onnxruntime": onnxruntime.__version__, "load_before": load,
                            "threads": torch.get_num_threads()}

    if "speed" in parts:
        rows = []
        for name in names:  # PyTorch and ORT of one model back to back, so both see the same machine load
            rows += bench_models([name], batches, "cpu", args.min_time)
            rows += bench_onnx([name], batches, args.min_time)
        print(to_markdown(rows))
        ref = {(r.device, r.batch): r.faces_per_s for r in rows if r.name == "rrdb-x4"}
        for r in rows:
            if r.name != "rrdb-x4" and r.scale == 4 and (r.device, r.batch) in ref:
                print(f"speed ratio {r.name} / rrdb-x4, {r.device}, batch {r.batch}: "
                      f"{r.faces_per_s / ref[r.device, r.batch]:.1f}x")
        print(flush=True)
        blob["speed"] = [dataclasses.asdict(r) for r in rows]

    if "cpu" in parts:
        cpu = cpu_cost(names, batches, args.min_time)
        print("faces per CPU-second, 1 thread (process CPU time: time other jobs held the cores does not count):\n"
              "| model | backend | batch | faces per CPU-second |\n|---|---|---:|---:|")
        for c in cpu:
            print(f"| {c['model']} | {c['backend']} | {c['batch']} | {c['faces_per_cpu_s']:.1f} |")
        ref = {(c["backend"], c["batch"]): c["faces_per_cpu_s"] for c in cpu if c["model"] == "rrdb-x4"}
        for c in cpu:
            if c["model"] != "rrdb-x4" and PRESETS[c["model"]][0].scale == 4 and (c["backend"], c["batch"]) in ref:
                print(f"CPU-cost ratio {c['model']} / rrdb-x4, {c['backend']}, batch {c['batch']}: "
                      f"{c['faces_per_cpu_s'] / ref[c['backend'], c['batch']]:.1f}x")
        print(flush=True)
        blob["cpu_time"] = cpu

    if "options" in parts:
        options = bench_ort_options("affectsr-x4-lite", batches, args.min_time)
        print(f"onnxruntime settings, affectsr-x4-lite, {torch.get_num_threads()} thread(s), best of 2 rounds:\n"
              "| setting | batch | faces/s | PSNR-Y bundled face (dB) |\n|---|---:|---:|---:|")
        for o in options:
            print(f"| {o['variant']} | {o['batch']} | {o['faces_per_s']:.1f} | {o['psnr_y_bundled_face']:.2f} |")
        print(flush=True)
        blob["ort_options"] = options

    if "parity" in parts:
        par = []
        for name in (n for n in names if weights_path(n) is not None):  # parity needs trained weights
            faces = [Face("bundled-astronaut", default_face(128))]
            if args.data:
                faces += load_faces(args.data, PRESETS[name][0].scale, "auto", args.limit)[0]
            par += parity([name], faces)
        print("| model | faces | LR landmark routes | PSNR-Y torch | PSNR-Y onnxruntime | min PSNR-Y ORT vs torch | "
              "max uint8 diff |\n|---|---:|---|---:|---:|---:|---:|")
        for r in par:
            print(f"| {r['model']} | {r['faces']} | {r['landmark_routes']} | {r['psnr_torch']:.3f} | "
                  f"{r['psnr_ort']:.3f} | {r['psnr_ort_vs_torch_min']:.1f} | {r['max_uint8_diff']} |")
        blob["parity"] = par

    blob["load_after"] = os.getloadavg()[0]
    print(f"\n1-min load average at the end: {blob['load_after']:.2f}")
    if args.json:
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(blob, indent=2)))
    return 0


if __name__ == "__main__":
    sys.exit(_compare_main())
