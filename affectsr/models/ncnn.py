"""A small reader of ncnn models (``.param`` text + ``.bin`` weights): enough to convert a
convolutional network such as Real-ESRGAN's RRDBNet to PyTorch, with no ncnn installed.

Format (ncnn's ``ParamDict``/``ModelBin``):

* ``.param`` is text: the magic ``7767517``; ``layer_count blob_count``; then one line per layer,
  ``type name n_in n_out in_blobs... out_blobs... key=value ...``. A key ``-233xx`` holds an
  array ``n,v1,...,vn`` and belongs to key ``xx``. A value with ``.``, ``e`` or ``E`` is a float.
* ``.bin`` holds the data of the layers that have any, in ``.param`` order. Of those, this reader
  knows ``Convolution``: a 4-byte storage tag (``0x01306B47``: fp16 follows, padded to 4 bytes;
  ``0``: fp32), ``weight_data_size`` values in [out][in][kh][kw] order, then ``num_output`` fp32
  biases with no tag when ``bias_term`` (key 5) is 1.

Anything else (another layer type with data, int8 or table-quantised weights, dynamic weights,
bytes left over or missing) is a :class:`NcnnFormatError` with one line that says what and where.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_FP32 = 0

# Layer types that carry no weights (so nothing of theirs is in the .bin). A layer type in neither
# this set nor WEIGHTED is refused: its data, if any, would shift every weight after it.
DATALESS = frozenset({
    "Input", "Split", "Concat", "Eltwise", "BinaryOp", "UnaryOp", "Interp", "ReLU", "Sigmoid", "TanH",
    "Clip", "Crop", "Pooling", "Reshape", "Permute", "PixelShuffle", "Flatten", "Softmax", "Noop",
})
WEIGHTED = frozenset({"Convolution"})


class NcnnFormatError(ValueError):
    """A .param/.bin pair this reader does not understand (bad file, or a feature it does not read)."""


@dataclass(frozen=True)
class Layer:
    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, int | float | tuple[int | float, ...]]

    def get(self, key: int, default=None):
        return self.params.get(key, default)


@dataclass(frozen=True)
class Conv:
    """One Convolution's data: weight (out, in, kh, kw) and bias (out,) or None, both float32."""

    layer: Layer
    weight: np.ndarray
    bias: np.ndarray | None

    @property
    def activation(self) -> tuple[int, tuple]:
        """ncnn's fused activation: (type, params); 0 none, 1 ReLU, 2 leaky ReLU (slope), ..."""
        p = self.layer.get(10, ())
        return int(self.layer.get(9, 0)), p if isinstance(p, tuple) else (p,)


def _number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def parse_param(text: str, source: str = ".param") -> list[Layer]:
    """The layers of a ``.param`` file's text (any line endings)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0] != str(MAGIC):
        raise NcnnFormatError(f"{source}: not an ncnn .param file (first line {lines[0][:20] if lines else ''!r}, "
                              f"expected {MAGIC})")
    try:
        n_layers, _n_blobs = (int(v) for v in lines[1].split())
    except (IndexError, ValueError):
        raise NcnnFormatError(f"{source}: line 2 must be 'layer_count blob_count'") from None
    if len(lines) - 2 != n_layers:
        raise NcnnFormatError(f"{source}: header says {n_layers} layers, the file has {len(lines) - 2}")
    layers = []
    for lineno, line in enumerate(lines[2:], start=3):
        tok = line.split()
        try:
            kind, name, n_in, n_out = tok[0], tok[1], int(tok[2]), int(tok[3])
            blobs = tok[4:4 + n_in + n_out]
            if len(blobs) != n_in + n_out:
                raise ValueError
            params: dict[int, int | float | tuple] = {}
            for kv in tok[4 + n_in + n_out:]:
                k, v = kv.split("=", 1)
                key = int(k)
                if key <= -23300:  # array: -233xx=n,v1,...,vn belongs to key xx
                    count, *values = v.split(",")
                    if int(count) != len(values):
                        raise ValueError
                    params[-key - 23300] = tuple(_number(x) for x in values)
                else:
                    params[key] = _number(v)
        except (IndexError, ValueError):
            raise NcnnFormatError(f"{source}: line {lineno}: cannot parse {line[:80]!r}") from None
        layers.append(Layer(kind, name, tuple(blobs[:n_in]), tuple(blobs[n_in:]), params))
    return layers


def _read_conv(layer: Layer, data: bytes, pos: int, source: str) -> tuple[Conv, int]:
    for key, what in ((8, "int8 quantisation (8=int8_scale_term)"), (19, "dynamic weights (19=1)")):
        if layer.get(key, 0):
            raise NcnnFormatError(f"{source}: layer {layer.name}: {what} is not supported")
    num_output, size = int(layer.get(0, 0)), int(layer.get(6, 0))
    kw = int(layer.get(1, 0))
    kh = int(layer.get(11, kw))
    if num_output <= 0 or kw <= 0 or size <= 0 or size % (num_output * kh * kw):
        raise NcnnFormatError(f"{source}: layer {layer.name}: weight_data_size {size} does not fit "
                              f"{num_output} outputs of {kh}x{kw} kernels")
    if pos + 4 > len(data):
        raise NcnnFormatError(f"{source}: ends before the weights of layer {layer.name}")
    (tag,) = struct.unpack_from("<I", data, pos)
    pos += 4
    if tag == TAG_FP16:
        nbytes = size * 2
        dtype = np.dtype("<f2")
        padded = (nbytes + 3) // 4 * 4
    elif tag == TAG_FP32:
        nbytes = padded = size * 4
        dtype = np.dtype("<f4")
    else:
        raise NcnnFormatError(f"{source}: layer {layer.name}: weight storage tag 0x{tag:08X} is not fp16 "
                              f"(0x{TAG_FP16:08X}) or fp32 (0); int8/quantised ncnn models are not supported")
    if pos + padded > len(data):
        raise NcnnFormatError(f"{source}: ends inside the weights of layer {layer.name}")
    weight = np.frombuffer(data, dtype, size, pos).astype(np.float32)
    pos += padded
    bias = None
    if int(layer.get(5, 0)):
        if pos + 4 * num_output > len(data):
            raise NcnnFormatError(f"{source}: ends inside the bias of layer {layer.name}")
        bias = np.frombuffer(data, "<f4", num_output, pos).astype(np.float32)
        pos += 4 * num_output
    return Conv(layer, weight.reshape(num_output, size // (num_output * kh * kw), kh, kw), bias), pos


def read_convolutions(layers: list[Layer], data: bytes, source: str = ".bin") -> list[Conv]:
    """Every Convolution's weights from the ``.bin`` bytes, in order; the file must be read to its end."""
    convs, pos = [], 0
    for layer in layers:
        if layer.type in WEIGHTED:
            conv, pos = _read_conv(layer, data, pos, source)
            convs.append(conv)
        elif layer.type not in DATALESS:
            raise NcnnFormatError(f"{source}: layer {layer.name} is a {layer.type}, which this reader does not know "
                                  f"(it reads {', '.join(sorted(WEIGHTED | DATALESS))})")
    if pos != len(data):
        raise NcnnFormatError(f"{source}: {len(data) - pos} bytes left after the last layer's weights "
                              f"(the .param does not describe this .bin)")
    return convs


def load(param: str | Path, bin: str | Path) -> tuple[list[Layer], list[Conv]]:
    """Read an ncnn model from a ``.param`` and a ``.bin`` file."""
    layers = parse_param(Path(param).read_text(encoding="ascii", errors="replace"), str(param))
    return layers, read_convolutions(layers, Path(bin).read_bytes(), str(bin))
