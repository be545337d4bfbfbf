"""Seeded fuzzing of the command line (issue 15): broken PNG, JPEG, GIF, WebP, MP4 and safetensors files.

Every case is made on the fly from a small valid file (truncations, bit flips, header edits, zero
length, wrong suffix) and run through the one entry point, :func:`affectsr.cli.main`, in-process:

- images: all cases of a format in one ``affectsr upscale`` call (one model, one detector), each
  file judged by its own line: an ``error:`` naming it and no output, never a traceback or an
  "unexpected" error;
- MP4: one ``affectsr video`` call per case (the input is checked before any model loads);
- safetensors: one ``affectsr upscale --model`` call per case (the weights are read first).

Most mutations must be refused (``MUST_FAIL``). A random bit flip inside pixel or tensor data can
leave a perfectly valid file (JPEG and GIF decoders are tolerant; a flipped mantissa bit is just
another weight): for those the rule is consistency, an error and nothing written, or exit 0 and an
output that reads back.
"""
from __future__ import annotations

import io
import json
import random
import re
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from affectsr.cli import main
from affectsr.images import read_image, resize
from affectsr.models import create_model

SEED = 15
MUST_FAIL = {"empty", "truncated", "magic", "huge_size", "zero_size", "wrong_suffix", "text", "nan", "header_len",
             "header_json"}
"""Mutation kinds no reader may accept; the others ("flip") may leave a valid file."""
UNEXPECTED = re.compile(r"unexpected \w+(Error|Exception)")
"""What `upscale` prints for an exception nobody turned into words (its catch-all)."""


def _image_bytes(face: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(face).save(buf, format=fmt, **({"quality": 90} if fmt in ("JPEG", "WEBP") else {}))
    return buf.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _size_edit(data: bytes, fmt: str, size: int) -> bytes:
    """The same file claiming ``size`` x ``size`` pixels in its header (checksums fixed where there are any)."""
    b = bytearray(data)
    if fmt == "PNG":
        ihdr = struct.pack(">II", size, size) + bytes(b[24:29])
        return bytes(b[:8]) + _png_chunk(b"IHDR", ihdr) + bytes(b[33:])
    if fmt == "GIF":  # the logical screen
        s = min(size, 65535)
        b[6:10] = struct.pack("<HH", s, s)
        return bytes(b)
    if fmt == "JPEG":
        i = b.index(b"\xff\xc0")  # baseline start of frame: length(2) precision(1) height(2) width(2)
        s = min(size, 65535)
        b[i + 5:i + 9] = struct.pack(">HH", s, s)
        return bytes(b)
    # WebP (lossy VP8): 14-bit width and height in the frame header
    i = b.index(b"\x9d\x01\x2a")
    s = min(size, 16383)
    b[i + 3:i + 7] = struct.pack("<HH", s, s)
    return bytes(b)


def image_cases(face: np.ndarray, rng: random.Random, per_kind: int, flips: int) -> list[tuple[str, str, bytes]]:
    """(name, kind, bytes) for PNG, JPEG, GIF and WebP: ``per_kind`` truncations and signature edits, ``flips``
    random bit flips (which may leave a valid file) per format."""
    cases = []
    for fmt, suffix in (("PNG", ".png"), ("JPEG", ".jpg"), ("GIF", ".gif"), ("WEBP", ".webp")):
        good = _image_bytes(face, fmt)
        n = len(good)
        variants: list[tuple[str, bytes]] = [("empty", b""), ("huge_size", _size_edit(good, fmt, 60000)),
                                             ("text", b"not an image at all\n" * rng.randint(1, 50))]
        if fmt != "GIF":  # a GIF's screen size is advisory: Pillow reads a 0 x 0 screen's frame at its own size
            variants.append(("zero_size", _size_edit(good, fmt, 0)))
        for _ in range(per_kind):
            variants.append(("truncated", good[:rng.randrange(0, n // 2)]))
            i = rng.randrange(0, 3)  # the signature's first bytes: no reader takes the file for its format
            variants.append(("magic", good[:i] + bytes([good[i] ^ (1 << rng.randrange(8))]) + good[i + 1:]))
        for _ in range(flips):
            flipped = bytearray(good)
            for _ in range(rng.randint(1, 8)):
                j = rng.randrange(n)
                flipped[j] ^= 1 << rng.randrange(8)
            variants.append(("flip", bytes(flipped)))
        for k, (kind, data) in enumerate(variants):
            cases.append((f"{fmt.lower()}-{k:03d}-{kind}{suffix}", kind, data))
    # other formats' bytes under an image suffix: an MP4 and a weights file named .png, .jpg, ...
    for k in range(per_kind):
        suffix = rng.choice([".png", ".jpg", ".gif", ".webp"])
        cases.append((f"wrong-{k:03d}-wrong_suffix{suffix}", "wrong_suffix", b"\x00\x00\x00\x18ftypmp42" + rng.randbytes(200)))
    return cases


def tiny_sr_weights(path: Path) -> Path:
    """A small SRCNN weights file: the files that still decode are upscaled in milliseconds (the reader is on trial)."""
    from affectsr.models import save_weights

    torch.manual_seed(0)
    return save_weights(create_model("srcnn-x4"), path)


def _check_images(cases, folder: Path, capsys) -> dict[str, int]:
    for name, _, data in cases:
        (folder / name).write_bytes(data)
    out = folder.parent / (folder.name + "-out")
    model = tiny_sr_weights(folder.parent / "srcnn.safetensors")
    code = main(["upscale", str(folder), "-o", str(out), "--model", str(model), "-q", "--aligned",
                 "--landmarks", "detect"])
    _, err = capsys.readouterr()
    assert "Traceback" not in err and not UNEXPECTED.search(err), err[-2000:]
    refused = 0
    for name, kind, _ in cases:
        src = folder / name
        written = [p for p in (out.glob(f"{Path(name).stem}.*") if out.exists() else [])]
        failed = f"error: {src}: " in err
        assert failed != bool(written), (name, failed, written)
        if kind in MUST_FAIL:
            assert failed, (name, kind)
        if written:
            read_image(written[0])  # an output is a real image
        refused += failed
    assert code == (1 if refused else 0)
    return {"cases": len(cases), "refused": refused}


def test_fuzzed_images_through_upscale(tmp_path, capsys, _default_face_session):
    rng = random.Random(SEED)
    face = resize(_default_face_session, (24, 24))
    cases = image_cases(face, rng, per_kind=40, flips=8)
    folder = tmp_path / "in"
    folder.mkdir()
    t = time.perf_counter()
    stats = _check_images(cases, folder, capsys)
    assert stats["cases"] >= 300
    print(f"{stats} in {time.perf_counter() - t:.1f} s")


def video_cases(good: bytes, rng: random.Random, n: int) -> list[tuple[str, str, bytes]]:
    """Truncations before the index (the clips are written with it at the end), text, other formats named .mp4."""
    still = np.zeros((8, 8, 3), np.uint8)
    cases = [("mp4-empty.mp4", "empty", b""), ("mp4-png.mp4", "wrong_suffix", _image_bytes(still, "PNG")),
             ("mp4-jpeg.mp4", "wrong_suffix", _image_bytes(still, "JPEG")),
             ("mp4-weights.mp4", "wrong_suffix", struct.pack("<Q", 2) + b"{}")]
    cases += [(f"mp4-{k:03d}-text.mp4", "text", b"not a video\n" * rng.randint(1, 400)) for k in range(10)]
    moov = good.index(b"moov")
    cases += [(f"mp4-{k:03d}-truncated.mp4", "truncated", good[:rng.randrange(1, moov - 4)]) for k in range(n)]
    return cases


def test_fuzzed_videos_through_the_video_command(tmp_path, capsys):
    from affectsr.video.io import write_video

    rng = random.Random(SEED + 1)
    frames = [np.full((16, 16, 3), 40 * i, np.uint8) for i in range(3)]
    good = write_video(tmp_path / "good.mp4", frames, rate=5).read_bytes()
    cases = video_cases(good, rng, 70)
    t = time.perf_counter()
    for name, kind, data in cases:
        src = tmp_path / name
        src.write_bytes(data)
        out = tmp_path / "out" / f"{name}.mp4"
        code = main(["video", str(src), "-o", str(out), "-q"])
        _, err = capsys.readouterr()
        assert kind in MUST_FAIL
        assert code == 2 and err.startswith(f"error: {src}: ") and err.count("\n") == 1, (name, err)
        assert "Traceback" not in err and "Errno" not in err
        assert not (tmp_path / "out").exists()
    assert len(cases) >= 80
    print(f"{len(cases)} videos in {time.perf_counter() - t:.1f} s")


def weights_cases(rng: random.Random, folder: Path, n: int, flips: int) -> list[tuple[str, str, bytes]]:
    """``n`` each of truncations, header-length edits, JSON header edits and NaN/inf values; ``flips`` random bit
    flips (a flip in tensor data is usually just another valid weight: those runs take the most time)."""
    torch.manual_seed(0)
    net = create_model("srcnn-x4")
    state = {k: v.detach().half().contiguous() for k, v in net.state_dict().items()}
    meta = {"format": "affectsr", "arch": "srcnn", "config": json.dumps(net.config.to_dict())}
    save_file(state, str(folder / "good.safetensors"), metadata=meta)
    good = (folder / "good.safetensors").read_bytes()
    (hlen,) = struct.unpack("<Q", good[:8])
    cases = [("w-empty.safetensors", "empty", b""), ("w-text.safetensors", "text", b"weights\n" * 30),
             ("w-png.safetensors", "wrong_suffix", _image_bytes(np.zeros((8, 8, 3), np.uint8), "PNG"))]
    for k in range(n):
        cases.append((f"w-{k:03d}-truncated.safetensors", "truncated", good[:rng.randrange(0, len(good) - 1)]))
        bad_len = rng.choice([0, 1, hlen - 1 - rng.randrange(hlen // 2), hlen + 1 + rng.randrange(1000), 10**12,
                              2**64 - 1])
        cases.append((f"w-{k:03d}-header_len.safetensors", "header_len", struct.pack("<Q", bad_len) + good[8:]))
        b = bytearray(good)
        i = 8 + rng.randrange(hlen)
        b[i] = rng.choice(b'{}[]",:\x00\xff')  # a structural character in the JSON header
        kind = "header_json" if bytes(b) != good else "flip"
        cases.append((f"w-{k:03d}-{kind}.safetensors", kind, bytes(b)))
        b = bytearray(good)
        j = 8 + hlen + 2 * rng.randrange((len(good) - 8 - hlen) // 2)  # one fp16 value: exponent all ones
        b[j + 1] |= 0x7C
        cases.append((f"w-{k:03d}-nan.safetensors", "nan", bytes(b)))
    for k in range(flips):
        b = bytearray(good)
        j = rng.randrange(len(good))
        b[j] ^= 1 << rng.randrange(8)
        cases.append((f"w-{k:03d}-flip.safetensors", "flip", bytes(b)))
    return cases


def test_fuzzed_weights_through_upscale_model(tmp_path, capsys, _default_face_session):
    from affectsr.images import save_image

    rng = random.Random(SEED + 2)
    img = save_image(tmp_path / "face.png", resize(_default_face_session, (16, 16)))
    cases = weights_cases(rng, tmp_path, 37, flips=3)
    t = time.perf_counter()
    refused = 0
    for name, kind, data in cases:
        path = tmp_path / name
        path.write_bytes(data)
        out = tmp_path / "out"
        code = main(["upscale", str(img), "-o", str(out), "--model", str(path), "-q", "--aligned"])
        _, err = capsys.readouterr()
        assert "Traceback" not in err and not UNEXPECTED.search(err), (name, err)
        if code != 0:
            assert code == 2 and err.startswith(f"error: {path}: ") and err.count("\n") == 1, (name, err)
            assert not out.exists(), name
            refused += 1
        else:
            assert kind not in MUST_FAIL, (name, err)
            read_image(out / "face.png")
            (out / "face.png").unlink()
            out.rmdir()
    # every must-fail kind was checked case by case above; a flip may leave a valid file (any number of them)
    assert len(cases) >= 150 and refused >= sum(kind in MUST_FAIL for _, kind, _ in cases)
    print(f"{len(cases)} weights files, {refused} refused, in {time.perf_counter() - t:.1f} s")
