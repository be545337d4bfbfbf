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

import copy
import dataclasses
import hashlib
import importlib
import io
import json
import math
import os
import time
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .assets import default_face
from .atomic import atomic_write
from .images import resize
from .landmarks import LandmarkDetector
from .models import ARCHITECTURES, PRESETS, WeightsNotFoundError, load_model
from .models.presets import default_model, weights_path
from .runinfo import package_version
from .types import SRModel, check_scale, uses_landmarks
from .weights import file_sha256

__all__ = [
    "ATOL", "DEFAULT_OPSET", "MIN_OPSET", "ExportError", "ExportReport", "OnnxSRModel", "default_cache_dir", "export_onnx",
    "load_onnx_model", "onnx_for", "random_landmarks", "require", "uses_landmarks", "weights_file",
]

DEFAULT_OPSET = 20  # the newest opset torch 2.13's TorchScript exporter writes; onnxruntime >= 1.18 runs it
MIN_OPSET = 11  # ONNX Resize matches PyTorch's interpolation only from opset 11 (IsInf/IsNaN need 10)
ATOL = 1e-3  # max |ORT - PyTorch| an export may differ by (outputs are images in [0, 1])
FORMAT = "affectsr-onnx/1"  # bump when the graph's inputs/outputs or metadata change (also keys the cache)
# bump when the graph of the same weights changes and runs faster (keys the cache, so a file exported before is
# made again; an old file still loads and gives the same output): 2 = issue 17's RRDB scale, GCN fold, 3 = the bicubic skip as Pad + Conv + DepthToSpace,
# 4 = MSAF as GlobalAveragePool + Gemms + a sigmoid, constant sizes in GCN/splat/MSAF, a 4-node landmark test,
# 5 = the SRCNN/FSRNet/DIC baselines' bicubic path as the same Pad + Conv + DepthToSpace
GRAPH_REVISION = 5
INSTALL_HINT = "pip install affectsr[onnx]"
META = "affectsr."  # prefix of our metadata_props keys


class ExportError(RuntimeError):
    """The exported graph does not reproduce the PyTorch model (nothing was written)."""


def require(module: str) -> Any:
    """Import onnx / onnxruntime (lazily: optional extras, and heavy), or say in one line how to get them."""
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
    if arch in ARCHITECTURES:
        try:
            return ARCHITECTURES[arch][0](**d)
        except (TypeError, ValueError):  # written by another version: keep the values readable
            pass
    return types.SimpleNamespace(**d)


def _sha256_state(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def weights_file(name: str) -> Path:
    """The safetensors file behind a preset name or path; WeightsNotFoundError when there is none."""
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


def _resolve(model_or_name: SRModel | str | Path) -> tuple[nn.Module, str, str, bool]:
    """(model on the CPU in fp32, name, weights sha256, trained)."""
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
    weights = weights_file(name)
    net = load_model(name)  # a damaged file raises WeightsError, which names it
    label = name if name in PRESETS else weights.stem
    return net, label, file_sha256(weights), True


# --- export ------------------------------------------------------------------------------------------


class _Graph(nn.Module):
    """The traced callable: ``(lr, landmarks)`` for prior models, ``(lr)`` for the others."""

    def __init__(self, net: nn.Module, with_landmarks: bool):
        super().__init__()
        self.net, self.with_landmarks = net, with_landmarks

    def forward(self, lr: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(lr, landmarks) if self.with_landmarks else self.net(lr)


def random_landmarks(b: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """``b x n x 3`` plausible landmarks (inside the crop, small depth): inputs for tracing, checks and timing."""
    lm = torch.rand(b, n, 3, generator=gen)
    lm[..., :2] = 0.15 + 0.7 * lm[..., :2]  # inside the face crop, as detections are
    lm[..., 2] = (lm[..., 2] - 0.5) * 0.1  # MediaPipe's relative depth is small
    return lm


def _trace(net: nn.Module, with_landmarks: bool, num_landmarks: int, in_size: int, opset: int) -> bytes:
    gen = torch.Generator().manual_seed(0)
    lr = torch.rand(2, 3, in_size, in_size, generator=gen)
    args = (lr, random_landmarks(2, num_landmarks, gen)) if with_landmarks else (lr,)
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
    gen = torch.Generator().manual_seed(1)
    s, n = in_size, num_landmarks

    def lm(b: int) -> torch.Tensor | None:
        return random_landmarks(b, n, gen) if with_landmarks else None

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


def export_onnx(model_or_name: SRModel | str | Path, path: str | Path, opset: int = DEFAULT_OPSET,
                check: bool = True, overwrite: bool = False, detector=None) -> ExportReport:
    """Export a model (preset name, ``.safetensors`` path or ``nn.Module``) to ``path``, atomically.

    ``check``: ``onnx.checker`` plus ORT-vs-PyTorch on the cases of :func:`_check_cases`; any
    difference over ``ATOL`` raises :class:`ExportError` before anything is written. ``detector``:
    a LandmarkDetector to reuse for the real-face case (one is made and closed otherwise).
    """
    onnx = require("onnx")
    require("onnxruntime")
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
    meta = {
        "format": FORMAT, "name": name, "arch": arch, "config": json.dumps(cfg), "scale": str(scale),
        "in_size": str(in_size), "uses_landmarks": "1" if with_lm else "0", "num_landmarks": str(num_landmarks),
        "weights_sha256": sha, "trained": "1" if trained else "0", "affectsr_version": package_version(),
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
        ort = require("onnxruntime")
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

    Cache files are ``<name>-<sha>.onnx`` with ``sha`` over the weights file, ``FORMAT``, ``GRAPH_REVISION`` and the
    opset, so new weights or a new export format never reuse a stale graph.
    """
    p = Path(str(name_or_path))
    if p.suffix == ".onnx":
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such ONNX file")
        return p
    weights = weights_file(str(name_or_path))
    key = f"{file_sha256(weights)}|{FORMAT}|graph{GRAPH_REVISION}|opset{opset}"
    key = hashlib.sha256(key.encode()).hexdigest()[:16]
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
    name = model or default_model(check_scale(scale or 4))
    net = OnnxSRModel(onnx_for(name, cache_dir))
    if scale is not None and net.scale != scale:
        raise ValueError(f"model {net.name!r} upscales x{net.scale}, but scale={scale} was asked")
    return net
