"""The ncnn .param/.bin reader on small hand-written files: layouts it reads, and every refusal."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from affectsr.models import ncnn

HEADER = "7767517\n{layers} {blobs}\n"


def _param(*lines: str, crlf: bool = False) -> str:
    text = HEADER.format(layers=len(lines), blobs=len(lines) + 1) + "\n".join(lines) + "\n"
    return text.replace("\n", "\r\n") if crlf else text


def _conv_bytes(w: np.ndarray, b: np.ndarray | None, fp16: bool) -> bytes:
    if fp16:
        data = w.astype("<f2").tobytes()
        data += b"\0" * (-len(data) % 4)  # fp16 data is padded to 4 bytes
        out = struct.pack("<I", ncnn.TAG_FP16) + data
    else:
        out = struct.pack("<I", ncnn.TAG_FP32) + w.astype("<f4").tobytes()
    return out + (b.astype("<f4").tobytes() if b is not None else b"")


TWO_CONVS = (
    "Input in 0 1 data",
    "Convolution c1 1 1 data a 0=3 1=3 5=1 6=81 9=2 -23310=1,2.000000e-01",
    "Convolution c2 1 1 a out 0=1 1=1 11=1 5=0 6=3",  # 3 odd fp16 values: exercises the padding
)


@pytest.mark.parametrize("crlf", [False, True])
def test_reads_fp16_and_fp32_convolutions_with_and_without_bias(crlf):
    rng = np.random.default_rng(0)
    w1, b1 = rng.standard_normal((3, 3, 3, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    w2 = rng.standard_normal((1, 3, 1, 1)).astype(np.float32)
    layers = ncnn.parse_param(_param(*TWO_CONVS, crlf=crlf))
    assert [ly.type for ly in layers] == ["Input", "Convolution", "Convolution"]
    assert layers[1].inputs == ("data",) and layers[1].outputs == ("a",)
    assert layers[1].params[0] == 3 and layers[1].params[10] == (0.2,) and isinstance(layers[1].params[10][0], float)
    convs = ncnn.read_convolutions(layers, _conv_bytes(w1, b1, fp16=False) + _conv_bytes(w2, None, fp16=True))
    assert len(convs) == 2
    np.testing.assert_array_equal(convs[0].weight, w1)
    np.testing.assert_array_equal(convs[0].bias, b1)
    assert convs[0].activation == (2, (0.2,)) and convs[1].activation == (0, ())
    assert convs[1].bias is None and convs[1].weight.shape == (1, 3, 1, 1)
    np.testing.assert_array_equal(convs[1].weight, w2.astype(np.float16).astype(np.float32))


def test_load_reads_files(tmp_path):
    w = np.arange(81, dtype=np.float32).reshape(3, 3, 3, 3)
    (tmp_path / "m.param").write_text(_param(TWO_CONVS[0], TWO_CONVS[1]))
    (tmp_path / "m.bin").write_bytes(_conv_bytes(w, np.zeros(3, np.float32), fp16=True))
    layers, convs = ncnn.load(tmp_path / "m.param", tmp_path / "m.bin")
    assert len(layers) == 2 and np.array_equal(convs[0].weight, w)


@pytest.mark.parametrize("text, match", [
    ("7767518\n1 1\nInput in 0 1 data\n", "not an ncnn .param"),
    ("", "not an ncnn .param"),
    ("7767517\nx\n", "line 2"),
    ("7767517\n2 2\nInput in 0 1 data\n", "header says 2 layers"),
    ("7767517\n1 1\nInput in 0 2 data\n", "line 3"),
    ("7767517\n1 1\nInput in 0 1 data 0=abc\n", "line 3"),
    ("7767517\n1 1\nInput in 0 1 data -23310=3,1.0\n", "line 3"),
])
def test_bad_param_text_is_one_clear_error(text, match):
    with pytest.raises(ncnn.NcnnFormatError, match=match):
        ncnn.parse_param(text, "m.param")


def test_bin_refusals():
    w, b = np.ones((3, 3, 3, 3), np.float32), np.zeros(3, np.float32)
    layers = ncnn.parse_param(_param(TWO_CONVS[0], TWO_CONVS[1]))
    good = _conv_bytes(w, b, fp16=True)
    with pytest.raises(ncnn.NcnnFormatError, match="4 bytes left"):
        ncnn.read_convolutions(layers, good + b"\0" * 4)
    with pytest.raises(ncnn.NcnnFormatError, match="inside the bias"):
        ncnn.read_convolutions(layers, good[:-4])
    with pytest.raises(ncnn.NcnnFormatError, match="inside the weights"):
        ncnn.read_convolutions(layers, good[:20])
    with pytest.raises(ncnn.NcnnFormatError, match="ends before"):
        ncnn.read_convolutions(layers, b"")
    with pytest.raises(ncnn.NcnnFormatError, match="0x000D4B38.*int8"):
        ncnn.read_convolutions(layers, struct.pack("<I", 0x000D4B38) + good[4:])


@pytest.mark.parametrize("line, match", [
    ("InnerProduct fc 1 1 data out 0=2 1=1 2=4", "InnerProduct, which this reader does not know"),
    ("Convolution c 1 1 data out 0=2 1=3 5=1 6=54 8=1", "int8"),
    ("Convolution c 1 1 data out 0=2 1=3 5=1 6=55", "does not fit"),
    ("Convolution c 1 1 data out 0=2 1=3 5=0 6=54 19=1", "dynamic weights"),
])
def test_layers_it_cannot_read_are_refused(line, match):
    layers = ncnn.parse_param(_param(TWO_CONVS[0], line))
    with pytest.raises(ncnn.NcnnFormatError, match=match):
        ncnn.read_convolutions(layers, _conv_bytes(np.ones((2, 3, 3, 3), np.float32), np.zeros(2, np.float32), True))
