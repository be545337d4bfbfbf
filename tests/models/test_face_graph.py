"""The MediaPipe face graph: size, connectivity, symmetry, groups and the GCN propagation matrix.

Everything is re-derived here from ``graph.edges`` (and, where installed, from mediapipe's own
connection lists) rather than from the helpers under test.
"""
from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch

from affectsr.models import mediapipe_topology as mpt
from affectsr.models.face_graph import (
    LEFT_IRIS_CENTRE,
    NUM_LANDMARKS,
    RIGHT_IRIS_CENTRE,
    FaceGraph,
    mediapipe_face_graph,
)

GROUPS = ("lips", "left_eye", "right_eye", "left_eyebrow", "right_eyebrow", "left_iris", "right_iris", "nose", "face_oval")


@pytest.fixture(scope="module")
def graph() -> FaceGraph:
    return mediapipe_face_graph()


def _neighbours(edges: np.ndarray, n: int) -> list[set[int]]:
    nb: list[set[int]] = [set() for _ in range(n)]
    for a, b in edges.tolist():
        nb[a].add(b)
        nb[b].add(a)
    return nb


def _components(nodes, neighbours: list[set[int]]) -> list[set[int]]:
    """Connected components of the subgraph induced by ``nodes`` (BFS, independent of FaceGraph)."""
    remaining = set(int(i) for i in nodes)
    comps = []
    while remaining:
        start = remaining.pop()
        comp, queue = {start}, deque([start])
        while queue:
            u = queue.popleft()
            for v in neighbours[u]:
                if v in remaining:
                    remaining.discard(v)
                    comp.add(v)
                    queue.append(v)
        comps.append(comp)
    return comps


def test_size_and_edge_format(graph):
    assert graph.num_nodes == NUM_LANDMARKS == 478
    e = graph.edges
    assert e.ndim == 2 and e.shape[1] == 2 and e.dtype.kind == "i"
    assert (e[:, 0] < e[:, 1]).all(), "each undirected edge stored once with a < b (no self loops)"
    assert e.min() >= 0 and e.max() < NUM_LANDMARKS
    assert len({tuple(p) for p in e.tolist()}) == len(e), "duplicate edges"
    # every landmark takes part in at least one edge (refined mesh: 468 mesh points + 10 iris points)
    assert set(np.unique(e).tolist()) == set(range(NUM_LANDMARKS))


def test_connected(graph):
    assert graph.num_components() == 1
    # independently: BFS over the dense adjacency from node 0 reaches all 478 nodes
    adj = graph.adjacency
    seen = np.zeros(graph.num_nodes, dtype=bool)
    seen[0] = True
    queue = deque([0])
    while queue:
        u = queue.popleft()
        for v in np.flatnonzero(adj[u]):
            if not seen[v]:
                seen[v] = True
                queue.append(int(v))
    assert seen.all(), f"unreachable from node 0: {np.flatnonzero(~seen)[:10]}"


def test_num_components_detects_disconnection():
    # the helper must not just return 1: two triangles and an isolated node = 3 components
    g = FaceGraph(7, np.array([[0, 1], [1, 2], [0, 2], [3, 4], [4, 5], [3, 5]]))
    assert g.num_components() == 3


def test_adjacency_symmetric_zero_diagonal(graph):
    a = graph.adjacency
    assert a.shape == (478, 478)
    assert set(np.unique(a).tolist()) <= {0.0, 1.0}
    assert np.array_equal(a, a.T)
    assert not np.diag(a).any()
    # adjacency holds exactly the edges
    assert a.sum() == 2 * len(graph.edges)
    assert a[graph.edges[:, 0], graph.edges[:, 1]].all()


def test_vendored_topology_matches_mediapipe():
    fmc = pytest.importorskip("mediapipe.python.solutions.face_mesh_connections")
    names = ["TESSELATION", "LIPS", "LEFT_EYE", "RIGHT_EYE", "LEFT_EYEBROW", "RIGHT_EYEBROW",
             "LEFT_IRIS", "RIGHT_IRIS", "NOSE", "FACE_OVAL"]
    for name in names:
        theirs = {tuple(sorted(p)) for p in getattr(fmc, f"FACEMESH_{name}")}
        ours = {tuple(sorted(p)) for p in np.asarray(getattr(mpt, name)).reshape(-1, 2).tolist()}
        assert ours == theirs, name


def test_graph_edges_are_mesh_contours_and_iris_links(graph):
    """The edge set is exactly tessellation U contours U (iris centre -> its ring and its eye)."""
    def pairs(flat):
        return {tuple(sorted(p)) for p in np.asarray(flat).reshape(-1, 2).tolist()}

    expected = pairs(mpt.TESSELATION)
    for name in ("LIPS", "LEFT_EYE", "RIGHT_EYE", "LEFT_EYEBROW", "RIGHT_EYEBROW", "LEFT_IRIS", "RIGHT_IRIS", "NOSE", "FACE_OVAL"):
        expected |= pairs(getattr(mpt, name))
    for centre, ring, eye in ((LEFT_IRIS_CENTRE, mpt.LEFT_IRIS, mpt.LEFT_EYE), (RIGHT_IRIS_CENTRE, mpt.RIGHT_IRIS, mpt.RIGHT_EYE)):
        for j in set(ring) | set(eye):
            expected.add(tuple(sorted((centre, j))))
    assert {tuple(p) for p in graph.edges.tolist()} == expected


def test_iris_centres_tied_to_their_own_eye(graph):
    a = graph.adjacency
    for centre, iris, eye, other_eye in (
        (RIGHT_IRIS_CENTRE, "right_iris", "right_eye", "left_eye"),
        (LEFT_IRIS_CENTRE, "left_iris", "left_eye", "right_eye"),
    ):
        ring = [j for j in graph.groups[iris] if j != centre]
        assert len(ring) == 4
        assert a[centre, ring].all() and a[centre, graph.groups[eye]].all()
        assert not a[centre, graph.groups[other_eye]].any()
        assert a[centre].sum() == 4 + len(graph.groups[eye])
    assert a[RIGHT_IRIS_CENTRE, LEFT_IRIS_CENTRE] == 0


def test_groups_nonempty_valid_and_connected(graph):
    assert set(GROUPS) <= set(graph.groups)
    nb = _neighbours(graph.edges, graph.num_nodes)
    for name in GROUPS:
        nodes = np.asarray(graph.groups[name])
        assert nodes.size > 0, name
        assert nodes.min() >= 0 and nodes.max() < NUM_LANDMARKS, name
        assert len(np.unique(nodes)) == nodes.size, f"{name}: duplicate nodes"
        comps = _components(nodes, nb)
        if name == "lips":
            # MediaPipe's lip contour is two closed loops (outer and inner lip line, 20 points
            # each); the mesh joins them only through lip points that are not on either line.
            assert sorted(len(c) for c in comps) == [20, 20], [len(c) for c in comps]
            one_hop = set(nodes.tolist()).union(*(nb[i] for i in nodes.tolist()))
            assert len(_components(one_hop, nb)) == 1, "lips not joined through their neighbours"
        else:
            assert len(comps) == 1, f"{name}: {len(comps)} components through graph edges"
    assert RIGHT_IRIS_CENTRE in graph.groups["right_iris"]
    assert LEFT_IRIS_CENTRE in graph.groups["left_iris"]
    assert set(graph.groups["right_iris"].tolist()) == {468, 469, 470, 471, 472}
    assert set(graph.groups["left_iris"].tolist()) == {473, 474, 475, 476, 477}
    # left and right are disjoint
    for l, r in (("left_eye", "right_eye"), ("left_eyebrow", "right_eyebrow"), ("left_iris", "right_iris")):
        assert not set(graph.groups[l].tolist()) & set(graph.groups[r].tolist())


def test_normalized_adjacency(graph):
    n = graph.num_nodes
    a = torch.zeros(n, n, dtype=torch.float64)
    e = torch.from_numpy(graph.edges)
    a[e[:, 0], e[:, 1]] = 1
    a[e[:, 1], e[:, 0]] = 1
    a_hat = a + torch.eye(n, dtype=torch.float64)
    d_inv_sqrt = torch.diag(a_hat.sum(1).rsqrt())
    ref = d_inv_sqrt @ a_hat @ d_inv_sqrt

    got = graph.normalized_adjacency()
    assert got.shape == (n, n) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(got, got.T, atol=0, rtol=0)
    # spectrum of D^-1/2 (A+I) D^-1/2 of a connected graph lies in (-1, 1] with a single eigenvalue 1
    ev = torch.linalg.eigvalsh(got.double())
    assert ev.max().item() == pytest.approx(1.0, abs=1e-6)
    assert ev.min().item() > -1.0
    assert (ev > 1 - 1e-6).sum().item() == 1


def test_edge_index_both_directions(graph):
    ei = graph.edge_index()
    assert ei.dtype == torch.int64
    assert ei.shape == (2, 2 * len(graph.edges))
    directed = {tuple(p) for p in ei.t().tolist()}
    assert len(directed) == ei.shape[1], "duplicate directed edges"
    undirected = {tuple(p) for p in graph.edges.tolist()}
    assert directed == undirected | {(b, a) for a, b in undirected}
    # agrees with the dense adjacency
    adj = torch.zeros(478, 478)
    adj[ei[0], ei[1]] = 1
    assert torch.equal(adj, torch.from_numpy(graph.adjacency))


def test_fresh_graph_each_call():
    g1, g2 = mediapipe_face_graph(), mediapipe_face_graph()
    assert g1 is not g2
    assert np.array_equal(g1.edges, g2.edges)
