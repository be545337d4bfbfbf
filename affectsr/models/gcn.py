"""Graph convolution over a fixed graph, batched over faces.

Why by hand: our graph never changes (one face topology), so a dense normalised adjacency
held as a buffer turns message passing into one batched matmul. That is faster on CPU/GPU
than scatter-based message passing, exports to ONNX as plain MatMul, and needs no
torch_geometric at run time. `tests/models/test_gcn.py` checks it equals PyG's ``GCNConv``.
"""
from __future__ import annotations

import torch
from torch import nn


class GCNLayer(nn.Module):
    """Kipf & Welling GCN layer: X' = Â X W + b, with Â = D^-1/2 (A + I) D^-1/2.

    Input and output are B x N x C (B faces, N landmarks). Parameter layout mirrors PyG's
    GCNConv (``lin.weight`` without bias, then ``bias``) so weights transfer one to one.
    """

    def __init__(self, in_channels: int, out_channels: int, adjacency: torch.Tensor, bias: bool = True):
        super().__init__()
        self.lin = nn.Linear(in_channels, out_channels, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        # non-persistent: derived from the topology, so it is not stored in checkpoints
        self.register_buffer("adj", adjacency.float(), persistent=False)
        nn.init.xavier_uniform_(self.lin.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.matmul(self.adj.to(x.dtype), self.lin(x))
        return out if self.bias is None else out + self.bias


class GCN(nn.Module):
    """A stack of GCN layers with LeakyReLU between them (none after the last)."""

    def __init__(self, dims: tuple[int, ...], adjacency: torch.Tensor):
        super().__init__()
        self.layers = nn.ModuleList(GCNLayer(a, b, adjacency) for a, b in zip(dims[:-1], dims[1:]))
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.act(x)
        return x
