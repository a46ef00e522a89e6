"""Building blocks of the SGRE heads (docs/METHOD.md, "Network"): conv/linear stacks and the
graph convolution over the 15 graph joints.

``GraphConvBlock`` keeps one ``Sequential(Linear, BatchNorm1d)`` per graph vertex
(``fcbn_list.<v>.{0,1}``, the released checkpoints' names; parameters, optimizer groups and
SyncBatchNorm conversion work on them as on any module). It runs in one of two ways:

* the fast path (default): the vertices' Linear weights are stacked into one batched matmul
  and their BatchNorm1d layers run as one ``F.batch_norm`` over (B, V*C), with the vertices'
  affine parameters and running statistics concatenated; the updated statistics (and
  ``num_batches_tracked``) are written back to every vertex's BatchNorm1d, exactly as 15
  separate calls would update them;
* the plain per-vertex module loop (``vectorized=False``): each vertex through its own
  ``Sequential``. It is the reference the tests compare the fast path with, and the path
  for anything other than plain ``nn.Linear`` + ``nn.BatchNorm1d`` modules.

Distributed training with SyncBatchNorm: call ``set_graph_vectorized(model, False)`` and
then ``nn.SyncBatchNorm.convert_sync_batchnorm(model)``; the converted per-vertex
SyncBatchNorm modules then synchronise their statistics through the per-vertex loop. (A
block whose BatchNorm modules are no longer plain ``nn.BatchNorm1d`` takes the loop by
itself, so forgetting the switch cannot skip the synchronisation.)
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


def _stacked_linear(x, linears):
    """Every vertex's Linear as one batched matmul: x (B, V, C_in) -> (B, V*C), vertex-major."""
    batch, num_v, _ = x.shape
    weight = torch.stack([lin.weight for lin in linears])          # (V, C, C_in)
    bias = torch.stack([lin.bias for lin in linears]).unsqueeze(1)  # (V, 1, C)
    feat = torch.baddbmm(bias, x.transpose(0, 1), weight.transpose(1, 2))  # (V, B, C)
    return feat.transpose(0, 1).reshape(batch, -1)


def _write_back_running_stats(bns, running_mean, running_var):
    """Hand the concatenated statistics that ``F.batch_norm`` updated back to each vertex."""
    channels = bns[0].num_features
    with torch.no_grad():
        for bn, mean, var in zip(bns, running_mean.split(channels), running_var.split(channels)):
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)


def vertexwise_linear_bn(x, fcbn_list, training):
    """All vertices' ``Linear`` + ``BatchNorm1d`` as one batched matmul and one batch norm.

    x: (B, V, C_in); ``fcbn_list[v]`` is ``Sequential(Linear(C_in, C), BatchNorm1d(C))`` with
    plain modules sharing one BatchNorm configuration. Returns (B, V, C). With ``training``
    each BatchNorm1d's ``running_mean``, ``running_var`` (unbiased batch variance) and
    ``num_batches_tracked`` are updated as by its own call (momentum None: cumulative average).
    """
    linears = [m[0] for m in fcbn_list]
    bns = [m[1] for m in fcbn_list]
    batch, num_v, _ = x.shape
    flat = _stacked_linear(x, linears)

    bn0 = bns[0]
    tracks_stats = bn0.track_running_stats and bn0.running_mean is not None
    use_batch_stats = training or not tracks_stats
    running_mean = running_var = None
    if tracks_stats:
        running_mean = torch.cat([bn.running_mean for bn in bns])
        running_var = torch.cat([bn.running_var for bn in bns])
    momentum = 0.0
    if training and tracks_stats:
        for bn in bns:
            bn.num_batches_tracked.add_(1)
        momentum = bn0.momentum if bn0.momentum is not None else 1.0 / float(bn0.num_batches_tracked)
    bn_weight = torch.cat([bn.weight for bn in bns]) if bn0.affine else None
    bn_bias = torch.cat([bn.bias for bn in bns]) if bn0.affine else None
    out = F.batch_norm(flat, running_mean, running_var, bn_weight, bn_bias,
                       use_batch_stats, momentum, bn0.eps)
    if training and tracks_stats:
        _write_back_running_stats(bns, running_mean, running_var)
    return out.view(batch, num_v, -1)


def vertexwise_linear_bn_loop(x, fcbn_list):
    """Reference path: vertex v's features through its own module, one vertex at a time."""
    return torch.stack([fcbn(x[:, v]) for v, fcbn in enumerate(fcbn_list)], dim=1)


class GraphConvBlock(nn.Module):
    """ReLU(Â · [BN_v(Linear_v(x_v))]_v): per-vertex Linear+BN, then mixing over vertices.

    adj: (V, V) normalised adjacency (array or tensor); kept as a non-persistent buffer
    so it follows ``.to(device)`` but never enters the state_dict.
    Input (B, V, dim_in) -> output (B, V, dim_out).
    ``vectorized=False`` selects the plain per-vertex loop (see the module docstring).
    """

    def __init__(self, adj, dim_in, dim_out, vectorized=True):
        super().__init__()
        adj = torch.as_tensor(adj, dtype=torch.float32)
        self.register_buffer('adj', adj.clone(), persistent=False)
        self.vertex_num = adj.shape[0]
        self.vectorized = vectorized
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
            feat = vertexwise_linear_bn(x, self.fcbn_list, self.fcbn_list[0][1].training)
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
    """Switch every GraphConvBlock inside ``module`` to the fast (True) or per-vertex path.

    Call it with False before ``nn.SyncBatchNorm.convert_sync_batchnorm(module)`` so the
    graph layers' BatchNorm statistics are synchronised vertex by vertex. Parameters and
    state_dict keys are the same on both paths. Returns ``module``.
    """
    for sub in module.modules():
        if isinstance(sub, GraphConvBlock):
            sub.vectorized = bool(enabled)
    return module
