"""How small can a face be for MediaPipe's landmarks? Measured on the bundled face.

For each input side, the 128 px bundled face is bicubically downscaled, landmarks are
detected (the detector upsamples internally), and compared with the landmarks found on the
128 px original: NME = mean point error / inter-ocular distance (outer eye corners 33, 263).
Run: python tools/landmark_sizes.py
"""
import sys
from pathlib import Path

import numpy as np

# this checkout's package, not an installed one (a tool run from another worktree measures that worktree's code)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from affectsr.assets import default_face  # noqa: E402
from affectsr.images import resize  # noqa: E402
from affectsr.landmarks import LandmarkDetector  # noqa: E402

SIZES = (128, 64, 48, 32, 24, 20, 18, 16, 14, 12)

hr = default_face(128)
with LandmarkDetector() as det:
    ref, ok = det.detect_landmarks([hr])
    assert ok[0], "no landmarks on the 128 px bundled face"
    ref = ref[0, :, :2]
    iod = np.linalg.norm(ref[33] - ref[263])
    print("| input side (px) | found | NME vs 128 px (inter-ocular) | mean error (px of the input) |")
    print("|---:|---|---:|---:|")
    for s in SIZES:
        lm, found = det.detect_landmarks([resize(hr, (s, s))])
        if not found[0]:
            print(f"| {s} | no | - | - |")
            continue
        err = np.linalg.norm(lm[0, :, :2] - ref, axis=1).mean()
        print(f"| {s} | yes | {err / iod:.3f} | {err * s:.2f} |")
