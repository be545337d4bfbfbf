"""Integer-factor bicubic upsampling that an exported graph runs in microseconds.

``F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False)`` exports as an ONNX cubic ``Resize``,
which ONNX Runtime's CPU kernel runs slowly (~4 ms for a 16 -> 128 px face at 2 threads, more than the whole
landmark prior). For an integer factor the same numbers are a fixed filter bank: output pixel ``s*i + r`` reads
input pixels ``i-2 .. i+2`` with weights that depend only on the phase ``r``, and PyTorch's clamping of
out-of-range source indices is replicate padding. So the upsample is replicate-pad 2, a depthwise 5x5 conv
with ``s*s`` phase kernels per channel, and ``pixel_shuffle`` (ONNX Pad + Conv + DepthToSpace).
``tests/models/test_bicubic.py`` checks it equals ``F.interpolate`` to float rounding.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

CUBIC_A = -0.75  # PyTorch's (and OpenCV's) cubic convolution constant


def _cubic(d: float) -> float:
    """Keys' cubic convolution kernel at distance |d| (PyTorch's cubic_convolution1 / cubic_convolution2)."""
    d, a = abs(d), CUBIC_A
    if d <= 1:
        return ((a + 2) * d - (a + 3)) * d * d + 1
    if d < 2:
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return 0.0


def bicubic_phases(scale: int) -> torch.Tensor:
    """``scale x 5`` float64 taps: row r weighs input offsets -2..2 for output phase r (align_corners=False).

    Output pixel ``s*i + r`` sits at source coordinate ``i + t`` with ``t = (r + 0.5) / s - 0.5`` in (-0.5, 0.5);
    its four taps are the pixels at ``floor(i + t) - 1 .. floor(i + t) + 2``.
    """
    taps = torch.zeros(scale, 5, dtype=torch.float64)
    for r in range(scale):
        t = (r + 0.5) / scale - 0.5
        first = math.floor(t) - 1  # offset of the first of the four taps: -2 or -1
        for k in range(4):
            taps[r, first + k + 2] = _cubic(t - (first + k))
    return taps


def bicubic_kernel(scale: int, channels: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The depthwise conv weight (channels*s*s x 1 x 5 x 5) whose output channels ``pixel_shuffle`` interleaves:
    channel ``c*s*s + ry*s + rx`` is phase (ry, rx) of input channel c."""
    p = bicubic_phases(scale)
    phases = (p[:, None, :, None] * p[None, :, None, :]).reshape(scale * scale, 1, 5, 5)  # (ry, rx) x 1 x 5 x 5
    return phases.repeat(channels, 1, 1, 1).to(dtype)


def bicubic_upsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """``F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)`` of an RGB batch, integer ``scale``.

    Eager PyTorch calls ``F.interpolate`` itself; a traced graph (ONNX export) gets :func:`bicubic_conv`.
    """
    if torch.jit.is_tracing():
        return bicubic_conv(x, scale)
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)


def bicubic_conv(x: torch.Tensor, scale: int, channels: int = 3) -> torch.Tensor:
    """The same upsampling as replicate-pad 2 + depthwise conv + ``pixel_shuffle`` (equal to float rounding).

    ``channels`` is ``x``'s channel count, given rather than read so a traced graph holds the weight as a constant.
    """
    weight = bicubic_kernel(scale, channels, x.dtype).to(x.device)
    return F.pixel_shuffle(F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), weight, groups=channels), scale)
