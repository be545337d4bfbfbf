"""GCNLayer / GCN against PyTorch Geometric's GCNConv on the face graph."""
from __future__ import annotations

import pytest
import torch

from affectsr.models.face_graph import mediapipe_face_graph
from affectsr.models.gcn import GCN, GCNLayer

pyg_nn = pytest.importorskip("torch_geometric.nn")

B, N = 3, 478


@pytest.fixture(scope="module")
def graph():
    return mediapipe_face_graph()


def _disjoint_batch(edge_index: torch.Tensor, b: int, n: int) -> torch.Tensor:
    """b copies of one graph as a single disjoint graph (PyG's mini-batching)."""
    return torch.cat([edge_index + i * n for i in range(b)], dim=1)


def _pair(graph, cin, cout, seed):
    torch.manual_seed(seed)
    ours = GCNLayer(cin, cout, graph.normalized_adjacency())
    theirs = pyg_nn.GCNConv(cin, cout)  # defaults: add_self_loops=True, normalize=True, bias=True
    with torch.no_grad():
        ours.bias.normal_()  # non-zero bias so it is compared too
        theirs.lin.weight.copy_(ours.lin.weight)
        theirs.bias.copy_(ours.bias)
    return ours, theirs


@pytest.mark.parametrize("cin,cout", [(3, 16), (16, 5)])
def test_gcn_layer_equals_pyg_gcnconv(graph, cin, cout):
    ours, theirs = _pair(graph, cin, cout, seed=cin)
    x = torch.randn(B, N, cin)
    ei = graph.edge_index()

    x1 = x.clone().requires_grad_(True)
    out = ours(x1)
    assert out.shape == (B, N, cout)

    # (1) one face at a time
    per_face = torch.stack([theirs(x[i], ei) for i in range(B)])
    torch.testing.assert_close(out, per_face, atol=1e-5, rtol=1e-5)

    # (2) all faces as one disjoint batch, with gradients w.r.t. the input
    x2 = x.clone().reshape(B * N, cin).requires_grad_(True)
    out2 = theirs(x2, _disjoint_batch(ei, B, N)).view(B, N, cout)
    torch.testing.assert_close(out, out2, atol=1e-5, rtol=1e-5)

    w = torch.randn(B, N, cout)
    (out * w).sum().backward()
    (out2 * w).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad.view(B, N, cin), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.lin.weight.grad, theirs.lin.weight.grad, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(ours.bias.grad, theirs.bias.grad, atol=1e-4, rtol=1e-5)


def test_gcn_layer_mixes_neighbours(graph):
    """A feature on one node spreads exactly to that node and its graph neighbours."""
    layer = GCNLayer(1, 1, graph.normalized_adjacency(), bias=False)
    with torch.no_grad():
        layer.lin.weight.fill_(1.0)
    x = torch.zeros(1, N, 1)
    node = 13
    x[0, node, 0] = 1.0
    out = layer(x)[0, :, 0]
    expected_support = set(torch.from_numpy(graph.adjacency[node]).nonzero().flatten().tolist()) | {node}
    assert set(out.nonzero().flatten().tolist()) == expected_support


def test_gcn_adjacency_not_in_state_dict(graph):
    layer = GCNLayer(3, 4, graph.normalized_adjacency())
    assert set(layer.state_dict()) == {"lin.weight", "bias"}


def test_gcn_stack_shape_and_pyg_equivalence(graph):
    dims = (3, 8, 16, 6)
    torch.manual_seed(0)
    gcn = GCN(dims, graph.normalized_adjacency())
    assert len(gcn.layers) == 3
    # the same stack in PyG: LeakyReLU(0.2) between layers, nothing after the last
    convs = [pyg_nn.GCNConv(a, b) for a, b in zip(dims[:-1], dims[1:])]
    with torch.no_grad():
        for c, l in zip(convs, gcn.layers):
            l.bias.normal_()
            c.lin.weight.copy_(l.lin.weight)
            c.bias.copy_(l.bias)
    x = torch.randn(B, N, 3)
    out = gcn(x)
    assert out.shape == (B, N, dims[-1])
    ei = _disjoint_batch(graph.edge_index(), B, N)
    h = x.reshape(B * N, 3)
    for i, c in enumerate(convs):
        h = c(h, ei)
        if i < len(convs) - 1:
            h = torch.nn.functional.leaky_relu(h, 0.2)
    torch.testing.assert_close(out, h.view(B, N, -1), atol=1e-5, rtol=1e-5)
    assert (out < 0).any(), "no activation after the last layer: outputs can be negative"
