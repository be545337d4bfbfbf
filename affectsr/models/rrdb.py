"""ESRGAN's RRDBNet (Wang et al. 2018), module for module.

Module structure and parameter names follow the reference ``RRDBNet_arch.py`` of ESRGAN
(conv_first, RRDB_trunk.{i}.RDB{1,2,3}.conv{1..5}, trunk_conv, upconv{1,2}, HRconv,
conv_last), so a user's ESRGAN x4 checkpoint loads with ``strict=True`` after
:func:`esrgan_state_dict` (which also accepts the old sequential naming and BasicSR's).
x8 adds ``upconv3``, which ESRGAN has no weights for.

``RRDBNet.forward`` takes an optional ``fuse`` callback so AffectSRNet can inject the
landmark prior after the trunk and after every x2 upsampling stage without duplicating the
backbone.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

# fuse(stage, features) -> features; stage 0 = after the trunk, k = after the k-th x2 upsampling
FuseFn = Callable[[int, torch.Tensor], torch.Tensor]


def channels_last(x: torch.Tensor) -> bool:
    """Whether to run a CPU inference pass channels-last (an exact speedup, README speed tables): outside autograd
    (training keeps the layout it was tuned in) and outside tracing (an exported graph has no memory format)."""
    return x.device.type == "cpu" and not torch.is_grad_enabled() and not torch.jit.is_tracing()


class ResidualDenseBlock_5C(nn.Module):  # noqa: N801 (ESRGAN's name, kept for checkpoint parity)
    """Five 3x3 convs with dense connections; output scaled by 0.2 and added to the input."""

    def __init__(self, nf: int = 64, gc: int = 32, bias: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1, bias=bias)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1, bias=bias)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1, bias=bias)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1, bias=bias)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1, bias=bias)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        for m in self.modules():  # ESRGAN/BasicSR init: kaiming scaled by 0.1 for stable deep residuals
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
                m.weight.data.mul_(0.1)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual in Residual Dense Block: three dense blocks, residual scaled by 0.2."""

    def __init__(self, nf: int, gc: int = 32):
        super().__init__()
        self.nf = nf
        self.RDB1 = ResidualDenseBlock_5C(nf, gc)
        self.RDB2 = ResidualDenseBlock_5C(nf, gc)
        self.RDB3 = ResidualDenseBlock_5C(nf, gc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.RDB3(self.RDB2(self.RDB1(x)))
        if torch.jit.is_tracing():
            # the same product as a depthwise 1x1 conv with weight 0.2 (a constant: nf, not a traced shape):
            # ONNX Runtime keeps its blocked NCHWc layout through a conv but not through a Mul by a scalar, which
            # left every later block's convs reordering their inputs in and out and concatenating in NCHW
            return F.conv2d(out, out.new_full((self.nf, 1, 1, 1), 0.2), groups=self.nf) + x
        return out * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN generator. ``scale`` is 2, 4 or 8 (one nearest-x2 + conv + LeakyReLU per stage)."""

    def __init__(self, in_nc: int = 3, out_nc: int = 3, nf: int = 64, nb: int = 23, gc: int = 32, scale: int = 4):
        super().__init__()
        if scale not in (2, 4, 8):
            raise ValueError(f"RRDBNet scale must be 2, 4 or 8, got {scale}")
        self.scale, self.nf = scale, nf
        self.num_up = int(math.log2(scale))
        self.conv_first = nn.Conv2d(in_nc, nf, 3, 1, 1, bias=True)
        self.RRDB_trunk = nn.Sequential(*[RRDB(nf, gc) for _ in range(nb)])
        self.trunk_conv = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)
        for i in range(1, self.num_up + 1):
            setattr(self, f"upconv{i}", nn.Conv2d(nf, nf, 3, 1, 1, bias=True))
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")  # a module (no weights) so profilers see it
        self.HRconv = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)
        self.conv_last = nn.Conv2d(nf, out_nc, 3, 1, 1, bias=True)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor, fuse: FuseFn | None = None) -> torch.Tensor:
        if not channels_last(x):
            return self.head(self.trunk(x), fuse)
        # the same convs on channels-last tensors, which oneDNN runs ~1.25x faster on the CPU; NCHW out, as ever
        return self.head(self.trunk(x.contiguous(memory_format=torch.channels_last)), fuse).contiguous()

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """conv_first, the RRDB blocks, trunk_conv and the trunk residual: the LR-resolution features."""
        fea = self.conv_first(x)
        return fea + self.trunk_conv(self.RRDB_trunk(fea))

    def head(self, fea: torch.Tensor, fuse: FuseFn | None = None) -> torch.Tensor:
        """Everything after the trunk (stage-0 fusion, the x2 stages, HRconv, conv_last); frozen-trunk training
        (:mod:`affectsr.train.frozen_trunk`) starts here from cached trunk features."""
        if fuse is not None:
            fea = fuse(0, fea)
        for i in range(1, self.num_up + 1):
            up = getattr(self, f"upconv{i}")
            fea = self.lrelu(up(self.upsample(fea)))
            if fuse is not None:
                fea = fuse(i, fea)
        return self.conv_last(self.lrelu(self.HRconv(fea)))


# --- checkpoint key mapping ---------------------------------------------------------------
# ESRGAN's "old arch" checkpoints (RRDB_ESRGAN_x4_old_arch.pth) index a flat nn.Sequential.
_OLD_ARCH = {
    "model.0.": "conv_first.",
    "model.3.": "upconv1.",
    "model.6.": "upconv2.",
    "model.8.": "HRconv.",
    "model.10.": "conv_last.",
}
# BasicSR's port renames every module.
_BASICSR = {
    "conv_body.": "trunk_conv.",
    "conv_up1.": "upconv1.",
    "conv_up2.": "upconv2.",
    "conv_up3.": "upconv3.",
    "conv_hr.": "HRconv.",
}


def esrgan_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an ESRGAN RRDBNet checkpoint to :class:`RRDBNet` parameter names.

    Accepts the three namings in circulation: ESRGAN's current one (returned unchanged),
    ESRGAN's old sequential one (``model.1.sub.{i}.RDB1.conv1.0.weight`` ...) and BasicSR's
    (``body.{i}.rdb1.conv1.weight``, ``conv_body``, ``conv_up1`` ...). A ``params``/``params_ema``
    wrapper (BasicSR) and a ``module.`` prefix (DataParallel) are removed.
    """
    sd = dict(state_dict)
    for wrapper in ("params_ema", "params", "state_dict"):
        if wrapper in sd and isinstance(sd[wrapper], Mapping):
            sd = dict(sd[wrapper])
            break
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
    out: dict[str, torch.Tensor] = {}
    trunk_conv_idx = None
    subs = [k for k in sd if k.startswith("model.1.sub.")]
    if subs:
        trunk_conv_idx = max(int(k.split(".")[3]) for k in subs)  # the last sub-module is trunk_conv
    for k, value in sd.items():
        m = re.match(r"model\.1\.sub\.(\d+)\.(.*)$", k)
        if m:
            idx, rest = int(m.group(1)), m.group(2)
            if idx == trunk_conv_idx:
                k = f"trunk_conv.{rest}"
            else:  # RDB1.conv1.0.weight -> RDB1.conv1.weight (the old arch wrapped conv+act in a Sequential)
                k = f"RRDB_trunk.{idx}." + re.sub(r"(conv\d)\.0\.", r"\1.", rest)
        for old, new in _OLD_ARCH.items():
            if k.startswith(old):
                k = new + k[len(old):]
        for old, new in _BASICSR.items():
            if k.startswith(old):
                k = new + k[len(old):]
        m = re.match(r"body\.(\d+)\.rdb(\d)\.(.*)$", k)
        if m:
            k = f"RRDB_trunk.{m.group(1)}.RDB{m.group(2)}.{m.group(3)}"
        out[k] = value
    return out


def infer_rrdb_config(state_dict: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """nf, nb, gc and scale of an RRDBNet checkpoint already mapped by :func:`esrgan_state_dict`."""
    if state_dict["conv_first.weight"].shape[1] != 3:
        raise ValueError("pixel-unshuffle RRDBNet checkpoints (BasicSR x1/x2, conv_first with "
                         f"{state_dict['conv_first.weight'].shape[1]} input channels) are not supported")
    nf = state_dict["conv_first.weight"].shape[0]
    gc = state_dict["RRDB_trunk.0.RDB1.conv1.weight"].shape[0]
    nb = 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("RRDB_trunk."))
    num_up = sum(1 for k in state_dict if re.fullmatch(r"upconv\d\.weight", k))
    return {"nf": nf, "nb": nb, "gc": gc, "scale": 2**num_up}


def load_esrgan_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """Read an ESRGAN/BasicSR RRDBNet checkpoint without unpickling code, mapped to our names.

    ``.safetensors`` files are read directly; ``.pth``/``.pt`` files with
    ``torch.load(weights_only=True)``, which refuses anything but tensors and containers.
    """
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    return esrgan_state_dict(sd)
