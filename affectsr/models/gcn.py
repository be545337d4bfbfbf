"""Graph convolution over a fixed graph, batched over faces.

Why by hand: our graph never changes (one face topology), so message passing is a fixed
weighted gather: each node's row of the normalised adjacency Â is stored as its (at most D)
neighbour indices and weights (ELL format, D = 21 on the face mesh against N = 478 nodes).
Â X is then one ``embedding_bag`` in PyTorch, and a Gather + MatMul in an exported ONNX graph
(with a 0.1 MB table instead of an N x N constant per layer). That is 3-8x faster on the CPU
than the dense N x N matmul (which streams 0.9 MB for 1.4% non-zeros) and needs no
torch_geometric at run time. `tests/models/test_gcn.py` checks it equals PyG's ``GCNConv``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def ell_adjacency(adjacency: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense N x N -> (N x D neighbour indices, N x D weights), D = the most non-zeros in a row.

    Short rows are padded with index 0 and weight 0, so every node gathers D rows.
    """
    nonzero = adjacency != 0
    d = max(int(nonzero.sum(1).max()), 1)
    # stable sort puts each row's non-zero columns first, in column order
    order = torch.sort((~nonzero).to(torch.int8), dim=1, stable=True).indices[:, :d]
    weight = torch.gather(adjacency.float(), 1, order)
    return torch.where(weight != 0, order, torch.zeros_like(order)), weight


def propagate(x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor,
              offsets: torch.Tensor | None = None) -> torch.Tensor:
    """Â X for X of B x N x C, with Â as :func:`ell_adjacency` gives it (``weight`` N x D, or N x 1 x D as
    :class:`GCN` passes it: shaped once for all its layers, so an exported graph holds one constant). ``offsets``:
    the bags' starts 0, D, 2D, ... when the caller keeps them (embedding_bag would build them on every call)."""
    n, c = x.shape[1:]
    if weight.dtype != x.dtype:  # (only where needed: a traced graph then records no Cast)
        weight = weight.to(x.dtype)
    if torch.jit.is_tracing():  # ONNX: Gather + MatMul (embedding_bag would export as a slow Loop)
        # nodes, neighbours and channels as constants (fixed by the graph and the weights), so the exported graph
        # computes no shapes; the batch stays -1 (it may be 0 faces). Alternatives measured slower in ONNX Runtime
        # (process CPU time, 1 thread, C = 9..68): Gather + Mul + ReduceSum (node- or batch-major), a broadcast
        # MatMul over a batch-major gather, a gather along a channel-major last axis. A dense Â (one MatMul) is ~2x
        # faster at 3-9 channels, but the exporter folds it into a 478 x 478 constant per layer (0.9 MB each)
        n, d, c = int(n), int(index.shape[1]), int(c)
        rows = x.transpose(0, 1).reshape(n, -1)  # node-major (N x BC), so each gathered row is contiguous
        neighbours = rows.index_select(0, index.flatten()).view(n, d, -1)  # N x D x BC
        out = torch.bmm(weight if weight.dim() == 3 else weight.unsqueeze(1), neighbours)
        return out.view(n, -1, c).transpose(0, 1)
    # the batch is -1 in every reshape: this may run with 0 faces (no landmarks)
    rows = x.transpose(0, 1).reshape(n, -1)  # node-major (N x BC), so each gathered row is contiguous
    # the same weighted sum as the traced Gather + MatMul without writing the N x D x BC gather out (4x faster at
    # batch 8)
    if offsets is None:
        out = F.embedding_bag(index, rows, per_sample_weights=weight.view(index.shape), mode="sum")
    else:
        out = F.embedding_bag(index.view(-1), rows, offsets, per_sample_weights=weight.reshape(-1), mode="sum")
    return out.view(n, -1, c).transpose(0, 1)


class GCNLayer(nn.Module):
    """Kipf & Welling GCN layer: X' = Â X W + b, with Â = D^-1/2 (A + I) D^-1/2.

    Input and output are B x N x C (B faces, N landmarks). Parameter layout mirrors PyG's
    GCNConv (``lin.weight`` without bias, then ``bias``) so weights transfer one to one.
    ``adjacency`` (dense N x N) may be left out when the caller passes Â, as
    :func:`ell_adjacency` gives it, to ``forward`` (as :class:`GCN` does, so a stack holds one
    copy and an ONNX export one table).
    """

    def __init__(self, in_channels: int, out_channels: int, adjacency: torch.Tensor | None = None,
                 bias: bool = True):
        super().__init__()
        self.lin = nn.Linear(in_channels, out_channels, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        # non-persistent: derived from the topology, so it is not stored in checkpoints
        index, weight = ell_adjacency(adjacency) if adjacency is not None else (None, None)
        self.register_buffer("adj_index", index, persistent=False)
        self.register_buffer("adj_weight", weight, persistent=False)
        nn.init.xavier_uniform_(self.lin.weight)

    def forward(self, x: torch.Tensor, adj: tuple[torch.Tensor, ...] | None = None,
                weight: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Â X W^T + b; ``adj``: (index, weight[, offsets]) of Â; ``weight`` and ``bias`` replace the layer's own
        (:meth:`GCN.forward` passes them to fold a linear map that follows the layer into it)."""
        index, adj_weight, *offsets = adj if adj is not None else (self.adj_index, self.adj_weight)
        if index is None:
            raise ValueError("GCNLayer built without an adjacency needs one in forward(x, (index, weight))")
        if weight is None:
            weight, bias = self.lin.weight, self.bias
        # (Â X) W == Â (X W): propagate whichever side has fewer channels
        if weight.shape[1] < weight.shape[0]:
            return F.linear(propagate(x, index, adj_weight, *offsets), weight, bias)  # (bias in the same op)
        out = propagate(F.linear(x, weight), index, adj_weight, *offsets)
        return out if bias is None else out + bias


class GCN(nn.Module):
    """A stack of GCN layers with LeakyReLU between them (none after the last), sharing one Â."""

    def __init__(self, dims: tuple[int, ...], adjacency: torch.Tensor):
        super().__init__()
        index, weight = ell_adjacency(adjacency)
        self.register_buffer("adj_index", index, persistent=False)
        self.register_buffer("adj_weight", weight, persistent=False)
        self.register_buffer("adj_offsets", torch.arange(0, index.numel(), index.shape[1]), persistent=False)
        self.layers = nn.ModuleList(GCNLayer(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = nn.LeakyReLU(0.2)  # (forward applies it in place, on each layer's fresh output)

    def fold(self, then: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The last layer's (weight, bias) with the linear map ``h -> h P^T + p`` of ``then = (P, p)`` folded in:
        (Â X W^T + b) P^T + p = Â X (P W)^T + (P b + p)."""
        weight, bias = then
        last = self.layers[-1]
        if last.bias is not None:
            bias = bias + weight @ last.bias
        return weight @ last.lin.weight, bias

    def forward(self, x: torch.Tensor, then: tuple[torch.Tensor, torch.Tensor] | None = None,
                folded: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> torch.Tensor:
        """B x N x dims[0] -> B x N x dims[-1]; with ``then = (P, p)``, the linear map ``h -> h P^T + p`` applied to
        the output, folded into the last layer (:meth:`fold`), so Â propagates P's rows instead of the layer's
        channels (the same numbers up to float rounding); ``folded``: :meth:`fold`'s result, when the caller keeps it."""
        # Â's weights as propagate's traced MatMul takes them (N x 1 x D), shaped once for all layers and with
        # N read from x: the exporter inlines a (non-persistent) buffer at each use, and folds a reshape of a
        # constant, into a copy of the table per layer; a reshape whose shape the graph computes is one node
        adj = (self.adj_index, self.adj_weight.view(x.shape[1], 1, -1))
        if not torch.jit.is_tracing():  # (a traced graph gathers instead: no offsets)
            adj += (self.adj_offsets,)
        for layer in self.layers[:-1]:
            x = F.leaky_relu(layer(x, adj), self.act.negative_slope, inplace=True)  # (self.act, without a module call)
        if then is not None:
            folded = self.fold(then)
        return self.layers[-1](x, adj) if folded is None else self.layers[-1](x, adj, *folded)
