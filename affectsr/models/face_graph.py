"""The face graph: which landmarks talk to which in the GCN prior.

One fixed topology over MediaPipe's 478 refined face-mesh landmarks: the triangulated mesh
(which covers cheeks, forehead and chin), the named contours (lips, eyes, brows, nose, face
oval) and, because MediaPipe leaves the two iris centres unconnected, edges from each iris
centre to its iris ring and to its eye contour (so gaze is tied to the eyelids).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from . import mediapipe_topology as mpt

NUM_LANDMARKS = 478
RIGHT_IRIS_CENTRE, LEFT_IRIS_CENTRE = 468, 473


def _pairs(flat: tuple[int, ...]) -> np.ndarray:
    return np.asarray(flat, dtype=np.int64).reshape(-1, 2)


@dataclass(frozen=True)
class FaceGraph:
    """An undirected graph over ``num_nodes`` landmarks, with named node groups."""

    num_nodes: int
    edges: np.ndarray  # E x 2, undirected, each pair once with a < b
    groups: dict[str, np.ndarray] = field(default_factory=dict)

    @cached_property
    def adjacency(self) -> np.ndarray:
        """Dense symmetric 0/1 adjacency without self loops (N x N, float32)."""
        a = np.zeros((self.num_nodes, self.num_nodes), dtype=np.float32)
        a[self.edges[:, 0], self.edges[:, 1]] = 1.0
        a[self.edges[:, 1], self.edges[:, 0]] = 1.0
        np.fill_diagonal(a, 0.0)
        return a

    def normalized_adjacency(self) -> torch.Tensor:
        """Kipf & Welling's D^-1/2 (A + I) D^-1/2, the propagation matrix of a GCN layer."""
        a = self.adjacency + np.eye(self.num_nodes, dtype=np.float32)
        d = 1.0 / np.sqrt(a.sum(1))
        return torch.from_numpy(d[:, None] * a * d[None, :])

    def edge_index(self) -> torch.Tensor:
        """2 x 2E directed edge list (both directions), the format PyTorch Geometric uses."""
        e = torch.from_numpy(self.edges).t()
        return torch.cat([e, e.flip(0)], dim=1)

    def num_components(self) -> int:
        """Connected components (1 for a usable face graph)."""
        parent = list(range(self.num_nodes))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for a, b in self.edges:
            parent[find(int(a))] = find(int(b))
        return len({find(i) for i in range(self.num_nodes)})


def _build_mediapipe_graph() -> FaceGraph:
    named = {
        "lips": mpt.LIPS,
        "left_eye": mpt.LEFT_EYE,
        "right_eye": mpt.RIGHT_EYE,
        "left_eyebrow": mpt.LEFT_EYEBROW,
        "right_eyebrow": mpt.RIGHT_EYEBROW,
        "left_iris": mpt.LEFT_IRIS,
        "right_iris": mpt.RIGHT_IRIS,
        "nose": mpt.NOSE,
        "face_oval": mpt.FACE_OVAL,
    }
    groups = {k: np.unique(_pairs(v)) for k, v in named.items()}
    groups["left_iris"] = np.append(groups["left_iris"], LEFT_IRIS_CENTRE)
    groups["right_iris"] = np.append(groups["right_iris"], RIGHT_IRIS_CENTRE)
    extra = [
        (c, j)
        for c, iris, eye in [
            (LEFT_IRIS_CENTRE, "left_iris", "left_eye"),
            (RIGHT_IRIS_CENTRE, "right_iris", "right_eye"),
        ]
        for j in np.concatenate([groups[iris], groups[eye]])
        if j != c
    ]
    all_edges = np.concatenate(
        [_pairs(mpt.TESSELATION)] + [_pairs(v) for v in named.values()] + [np.asarray(extra)]
    )
    all_edges = np.sort(all_edges, axis=1)
    all_edges = np.unique(all_edges[all_edges[:, 0] != all_edges[:, 1]], axis=0)
    return FaceGraph(NUM_LANDMARKS, all_edges, groups)


def mediapipe_face_graph() -> FaceGraph:
    """The 478-node graph for MediaPipe's refined face mesh (built fresh: no global state)."""
    return _build_mediapipe_graph()
