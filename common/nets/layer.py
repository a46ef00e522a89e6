"""Building blocks of the SGRE heads (docs/METHOD.md, "Network"): conv/linear stacks and the
graph convolution over the 15 graph joints.

``GraphConvBlock`` applies one ``Linear`` and one ``BatchNorm1d`` per graph vertex. The
vertices' Linear weights and biases are stored stacked (``weight`` (V, C_in, C_out), ``bias``
(V, C_out)) and their BatchNorm layers are one ``BatchNorm1d`` over V*C_out channels
(``bn``): batch norm is per channel, so this is exactly V separate BatchNorm1d(C_out) layers,
running statistics (unbiased variance), momentum and ``num_batches_tracked`` included. A
forward is therefore one batched matmul and one batch norm.

Checkpoints keep the per-vertex names of the released SGRE files
(``fcbn_list.<v>.0.{weight,bias}``, ``fcbn_list.<v>.1.{weight,bias,running_mean,running_var,
num_batches_tracked}``): ``state_dict`` writes them and ``load_state_dict`` reads them
(public state-dict hooks), so released checkpoints load strictly.

Distributed training: ``nn.SyncBatchNorm.convert_sync_batchnorm`` converts ``bn`` like any
BatchNorm layer, and per-channel synchronised statistics are exactly per-vertex ones, so the
graph layers need no preparation.
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


class GraphConvBlock(nn.Module):
    """ReLU(Â · [BN_v(Linear_v(x_v))]_v): per-vertex Linear + BatchNorm1d, then mixing over vertices.

    adj: (V, V) normalised adjacency (array or tensor); kept as a non-persistent buffer so it
    follows ``.to(device)`` but never enters the state_dict. Input (B, V, dim_in) -> output
    (B, V, dim_out). Parameters: ``weight`` (V, dim_in, dim_out) (vertex v's Linear weight,
    transposed), ``bias`` (V, dim_out), ``bn`` BatchNorm1d(V * dim_out), vertex-major channels.
    """

    def __init__(self, adj, dim_in, dim_out):
        super().__init__()
        adj = torch.as_tensor(adj, dtype=torch.float32)
        self.register_buffer('adj', adj.clone(), persistent=False)
        self.vertex_num = adj.shape[0]
        self.dim_in, self.dim_out = dim_in, dim_out
        self.weight = nn.Parameter(torch.empty(self.vertex_num, dim_in, dim_out))
        self.bias = nn.Parameter(torch.empty(self.vertex_num, dim_out))
        self.bn = nn.BatchNorm1d(self.vertex_num * dim_out)
        self._init_like_per_vertex_linear()
        self.register_state_dict_post_hook(_per_vertex_state_dict)
        self.register_load_state_dict_pre_hook(_stacked_state_dict)

    @torch.no_grad()
    def _init_like_per_vertex_linear(self):
        """PyTorch's default Linear initialisation, vertex after vertex, drawing the random
        numbers in the same order as V separately constructed ``nn.Linear`` layers."""
        for v in range(self.vertex_num):
            linear = nn.Linear(self.dim_in, self.dim_out)
            self.weight[v].copy_(linear.weight.t())
            self.bias[v].copy_(linear.bias)

    @torch.no_grad()
    def init_normal_linear(self, std):
        """Linear weights N(0, std^2) drawn per vertex as (dim_out, dim_in) matrices (the draw
        order of V ``nn.init.normal_`` calls on per-vertex Linear weights), biases 0."""
        for v in range(self.vertex_num):
            weight = torch.empty(self.dim_out, self.dim_in, device=self.weight.device)
            self.weight[v].copy_(nn.init.normal_(weight, std=std).t())
        self.bias.zero_()

    def canonical_items(self, tensors):
        """Per-vertex layout of tensors shaped like this block's parameters (see
        ``common/nets/stacked.py``): ``fcbn_list.<v>.{0,1}.{weight,bias}``, vertex after vertex."""
        return [(f'fcbn_list.{v}.{suffix}', _vertex_value(self, tensors[name], name, v))
                for v in range(self.vertex_num) for suffix, name in _PER_VERTEX_PARAMETERS]

    def stacked_items(self, canonical):
        """Inverse of ``canonical_items``: {per-vertex name: tensor} -> {parameter name: tensor}."""
        return {name: _stack_vertices(name, [canonical[f'fcbn_list.{v}.{suffix}']
                                             for v in range(self.vertex_num)])
                for suffix, name in _PER_VERTEX_PARAMETERS}

    def forward(self, x):
        batch = x.shape[0]
        # (V, B, C_in) @ (V, C_in, C_out) + bias -> (V, B, C_out) -> (B, V*C_out), vertex-major
        feat = torch.baddbmm(self.bias.unsqueeze(1), x.transpose(0, 1), self.weight)
        feat = self.bn(feat.transpose(0, 1).reshape(batch, -1))
        return F.relu(torch.matmul(self.adj, feat.view(batch, self.vertex_num, -1)))


# state-dict entries of one vertex, in the released checkpoints' order: (per-vertex suffix,
# stacked name)
_PER_VERTEX_ENTRIES = (
    ('0.weight', 'weight'), ('0.bias', 'bias'),
    ('1.weight', 'bn.weight'), ('1.bias', 'bn.bias'),
    ('1.running_mean', 'bn.running_mean'), ('1.running_var', 'bn.running_var'),
    ('1.num_batches_tracked', 'bn.num_batches_tracked'),
)
_PER_VERTEX_PARAMETERS = _PER_VERTEX_ENTRIES[:4]


def _vertex_value(block, stacked, name, v):
    """Vertex ``v``'s share of the stacked state entry ``name`` (a copy, per-vertex layout)."""
    if name == 'weight':
        return stacked[v].t().contiguous()
    if name == 'bn.num_batches_tracked':
        return stacked.clone()  # one counter serves every vertex
    return stacked.view(block.vertex_num, -1)[v].clone()


def _per_vertex_state_dict(block, state_dict, prefix, local_metadata):
    """state_dict post-hook: replace the stacked entries by the per-vertex checkpoint names."""
    stacked = {name: state_dict.pop(prefix + name) for _, name in _PER_VERTEX_ENTRIES
               if prefix + name in state_dict}
    for v in range(block.vertex_num):
        for suffix, name in _PER_VERTEX_ENTRIES:
            if name in stacked:
                state_dict[f'{prefix}fcbn_list.{v}.{suffix}'] = _vertex_value(block, stacked[name], name, v)


def _stacked_state_dict(block, state_dict, prefix, local_metadata, strict, missing_keys,
                        unexpected_keys, error_msgs):
    """load_state_dict pre-hook: gather per-vertex checkpoint entries into the stacked names.

    An entry is converted only when all V vertices have it (otherwise the per-vertex keys stay
    and load_state_dict reports them). The vertices' ``num_batches_tracked`` become one
    counter, their maximum (the released files store the same count for every vertex).
    """
    for suffix, name in _PER_VERTEX_ENTRIES:
        keys = [f'{prefix}fcbn_list.{v}.{suffix}' for v in range(block.vertex_num)]
        if not all(key in state_dict for key in keys):
            continue
        state_dict[prefix + name] = _stack_vertices(name, [state_dict.pop(key) for key in keys])


def _stack_vertices(name, values):
    """The stacked entry ``name`` from its V per-vertex values (inverse of ``_vertex_value``)."""
    if name == 'weight':
        return torch.stack([value.t() for value in values])
    if name == 'bias':
        return torch.stack(values)
    if name == 'bn.num_batches_tracked':
        return torch.stack(values).max()
    return torch.cat(values)


class GraphResBlock(nn.Module):
    """x + graph_block2(graph_block1(x)), no activation after the sum."""

    def __init__(self, adj, dim):
        super().__init__()
        self.graph_block1 = GraphConvBlock(adj, dim, dim)
        self.graph_block2 = GraphConvBlock(adj, dim, dim)

    def forward(self, x):
        return x + self.graph_block2(self.graph_block1(x))
