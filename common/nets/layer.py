"""Building blocks of the SGRE heads (MODEL.md §4.1, §4.5).

``GraphConvBlock`` keeps one ``Sequential(Linear, BatchNorm1d)`` per graph vertex
(``fcbn_list.<v>.{0,1}``, the checkpoint's names) but by default evaluates all
vertices at once: the per-vertex Linear weights are stacked into one batched
matmul (on the CPU the 2052-wide input block instead runs one Linear per vertex,
since copying its 15.7 MB of weights every call costs more than it saves), and
the per-vertex BatchNorm1d is one batch norm over (B, V*C) with the vertices'
parameters and statistics concatenated.  Running statistics are written back to
each vertex's BatchNorm1d exactly as separate calls would.  The plain per-vertex
loop is kept (``vectorized=False``) and is used automatically when the BatchNorm
modules are no longer plain ``nn.BatchNorm1d`` (e.g. after a SyncBatchNorm
conversion).
"""
import torch
import torch.nn.functional as F
from torch import nn


def make_conv_layers(feat_dims, kernel=3, stride=1, padding=1, bnrelu_final=True):
    """Conv2d(with bias)-BatchNorm2d-ReLU stack over consecutive ``feat_dims``.

    The last conv has no BN/ReLU when ``bnrelu_final`` is False.  Returns an
    ``nn.Sequential`` indexed conv, bn, relu, conv, ...
    """
    layers = []
    for i in range(len(feat_dims) - 1):
        layers.append(nn.Conv2d(feat_dims[i], feat_dims[i + 1], kernel_size=kernel,
                                stride=stride, padding=padding))
        if i < len(feat_dims) - 2 or bnrelu_final:
            layers.append(nn.BatchNorm2d(feat_dims[i + 1]))
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def make_linear_layers(feat_dims, relu_final=False):
    """Linear-ReLU stack over consecutive ``feat_dims`` (no batch norm).

    ``[a, 128, 128, 6]`` gives Linear layers at indices 0, 2, 4.  A ReLU follows the
    last Linear only when ``relu_final`` is True.
    """
    layers = []
    for i in range(len(feat_dims) - 1):
        layers.append(nn.Linear(feat_dims[i], feat_dims[i + 1]))
        if i < len(feat_dims) - 2 or relu_final:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


# On the CPU, stacking the per-vertex weights costs a copy of all of them on every call; above
# this many weight values (the 2052->128 input block) one Linear per vertex is faster there.
# Both give the same numbers: each vertex's features meet only that vertex's weights.
CPU_STACK_MAX_WEIGHTS = 1 << 20


def stack_linear_weights(x, linears):
    """Whether the per-vertex Linear layers run as one batched matmul (else one call per vertex)."""
    if x.device.type != 'cpu':
        return True
    weight = linears[0].weight
    return len(linears) * weight.numel() <= CPU_STACK_MAX_WEIGHTS


def vertexwise_linear_bn(x, fcbn_list, training, stacked=None):
    """All vertices' ``Linear`` + ``BatchNorm1d`` with one batch-norm call.

    x: (B, V, C_in); ``fcbn_list[v]`` is ``Sequential(Linear(C_in, C), BatchNorm1d(C))``.
    Returns (B, V, C).  In training mode each BatchNorm1d's ``running_mean``,
    ``running_var`` (unbiased) and ``num_batches_tracked`` are updated as by its own call.
    ``stacked`` forces the batched-matmul (True) or per-vertex (False) Linear; None picks
    by device and size (``stack_linear_weights``).
    """
    linears = [m[0] for m in fcbn_list]
    bns = [m[1] for m in fcbn_list]
    batch, num_v, _ = x.shape
    channels = linears[0].out_features
    if stacked is None:
        stacked = stack_linear_weights(x, linears)
    if stacked:
        weight = torch.stack([lin.weight for lin in linears])          # (V, C, C_in)
        bias = torch.stack([lin.bias for lin in linears]).unsqueeze(1)  # (V, 1, C)
        # (V, B, C_in) @ (V, C_in, C) + bias -> (V, B, C) -> (B, V*C), vertex-major
        feat = torch.baddbmm(bias, x.transpose(0, 1), weight.transpose(1, 2))
        flat = feat.transpose(0, 1).reshape(batch, num_v * channels)
    else:
        flat = torch.cat([F.linear(x[:, v], lin.weight, lin.bias) for v, lin in enumerate(linears)],
                         dim=1)

    bn0 = bns[0]
    use_batch_stats = training or bn0.running_mean is None
    running_mean = running_var = None
    momentum = 0.0
    if bn0.track_running_stats and bn0.running_mean is not None:
        running_mean = torch.cat([bn.running_mean for bn in bns])
        running_var = torch.cat([bn.running_var for bn in bns])
    if training and bn0.track_running_stats and bn0.num_batches_tracked is not None:
        counters = [bn.num_batches_tracked for bn in bns]
        torch._foreach_add_(counters, 1)
        # BatchNorm1d's cumulative average when momentum is None
        momentum = bn0.momentum if bn0.momentum is not None else 1.0 / float(counters[0])
    bn_weight = torch.cat([bn.weight for bn in bns]) if bn0.affine else None
    bn_bias = torch.cat([bn.bias for bn in bns]) if bn0.affine else None
    out = F.batch_norm(flat, running_mean, running_var, bn_weight, bn_bias,
                       use_batch_stats, momentum, bn0.eps)
    if training and running_mean is not None:
        # F.batch_norm updated the concatenated copies in place; hand them back.
        with torch.no_grad():
            torch._foreach_copy_([bn.running_mean for bn in bns], list(running_mean.split(channels)))
            torch._foreach_copy_([bn.running_var for bn in bns], list(running_var.split(channels)))
    return out.view(batch, num_v, channels)


def vertexwise_linear_bn_loop(x, fcbn_list):
    """Reference path: vertex v's features through its own module, one vertex at a time."""
    return torch.stack([fcbn(x[:, v]) for v, fcbn in enumerate(fcbn_list)], dim=1)


class GraphConvBlock(nn.Module):
    """ReLU(Â · [BN_v(Linear_v(x_v))]_v): per-vertex Linear+BN, then mixing over vertices.

    adj: (V, V) normalised adjacency (array or tensor); kept as a non-persistent buffer
    so it follows ``.to(device)`` but never enters the state_dict.
    Input (B, V, dim_in) -> output (B, V, dim_out).
    ``vectorized=False`` selects the plain per-vertex loop; ``stack_weights`` (None: by device
    and size) forces how the fast path runs the Linear layers.
    """

    def __init__(self, adj, dim_in, dim_out, vectorized=True):
        super().__init__()
        adj = torch.as_tensor(adj, dtype=torch.float32)
        self.register_buffer('adj', adj.clone(), persistent=False)
        self.vertex_num = adj.shape[0]
        self.vectorized = vectorized
        self.stack_weights = None
        self.fcbn_list = nn.ModuleList(
            nn.Sequential(nn.Linear(dim_in, dim_out), nn.BatchNorm1d(dim_out))
            for _ in range(self.vertex_num))

    def uses_vectorized_path(self):
        """The fast path only applies to plain Linear + BatchNorm1d modules."""
        first = self.fcbn_list[0]
        return (self.vectorized and type(first[0]) is nn.Linear
                and type(first[1]) is nn.BatchNorm1d)

    def forward(self, x):
        if self.uses_vectorized_path():
            feat = vertexwise_linear_bn(x, self.fcbn_list, self.fcbn_list[0][1].training,
                                        self.stack_weights)
        else:
            feat = vertexwise_linear_bn_loop(x, self.fcbn_list)
        return F.relu(torch.matmul(self.adj, feat))


class GraphResBlock(nn.Module):
    """x + graph_block2(graph_block1(x)), no activation after the sum."""

    def __init__(self, adj, dim, vectorized=True):
        super().__init__()
        self.graph_block1 = GraphConvBlock(adj, dim, dim, vectorized)
        self.graph_block2 = GraphConvBlock(adj, dim, dim, vectorized)

    def forward(self, x):
        return x + self.graph_block2(self.graph_block1(x))


def set_graph_vectorized(module, enabled):
    """Switch every GraphConvBlock inside ``module`` to the fast (True) or per-vertex path."""
    for sub in module.modules():
        if isinstance(sub, GraphConvBlock):
            sub.vectorized = bool(enabled)
    return module
