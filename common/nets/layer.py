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
        values = [state_dict.pop(key) for key in keys]
        if name == 'weight':
            state_dict[prefix + name] = torch.stack([value.t() for value in values])
        elif name == 'bias':
            state_dict[prefix + name] = torch.stack(values)
        elif name == 'bn.num_batches_tracked':
            state_dict[prefix + name] = torch.stack(values).max()
        else:
            state_dict[prefix + name] = torch.cat(values)


def _stack_vertex_states(kind, states):
    """One optimizer state of a stacked parameter from its V per-vertex states (same keys);
    ``kind`` None: a parameter outside the graph blocks (one state, copied). New tensors, so
    the result shares no memory with the input."""
    merged = {}
    for key, first in states[0].items():
        values = [state[key] for state in states]
        if not torch.is_tensor(first):
            merged[key] = first
        elif kind is None or first.dim() == 0:
            merged[key] = first.clone()  # scalars such as Adam's step count agree over the vertices
        elif kind == 'weight':
            merged[key] = torch.stack([value.t() for value in values])
        elif kind == 'bias':
            merged[key] = torch.stack(values)
        else:
            merged[key] = torch.cat(values)
    return merged


def stacked_optimizer_state(model, optimizer, per_vertex_state):
    """An optimizer state_dict saved with per-vertex graph layers, re-indexed for ``optimizer``.

    Snapshots written when every graph vertex had its own ``Linear`` and ``BatchNorm1d``
    (the released SGRE files among them) list, per GraphConvBlock, 4*V parameters in the order
    (linear weight, linear bias, bn weight, bn bias) of vertex 0, 1, ...; ``optimizer`` (built
    over ``model``'s parameters, in the same groups) holds 4 stacked ones per block. Returns
    a state_dict for ``optimizer.load_state_dict`` with every per-parameter state (e.g. Adam's
    moments) stacked like the parameters; the groups' hyper-parameters are kept.
    """
    blocks = {}
    for module in model.modules():
        if isinstance(module, GraphConvBlock):
            blocks[id(module.weight)] = module
    old_groups = per_vertex_state['param_groups']
    if len(old_groups) != len(optimizer.param_groups):
        raise ValueError(f'the saved optimizer state has {len(old_groups)} parameter groups, '
                         f'the optimizer {len(optimizer.param_groups)}')
    state, groups, new_index = {}, [], 0
    for group, old_group in zip(optimizer.param_groups, old_groups):
        old_ids = list(old_group['params'])
        position, params = 0, []
        group_params = group['params']
        i = 0
        while i < len(group_params):
            block = blocks.get(id(group_params[i]))
            if block is None:
                if position >= len(old_ids):
                    raise ValueError(f'the saved optimizer group has {len(old_ids)} parameters, '
                                     'fewer than the per-vertex layout of this model')
                pieces = [(None, [old_ids[position]])]
                position += 1
                i += 1
            else:
                count = block.vertex_num
                if position + 4 * count > len(old_ids):
                    raise ValueError(f'the saved optimizer group has {len(old_ids)} parameters, '
                                     'fewer than the per-vertex layout of this model')
                ids = old_ids[position:position + 4 * count]
                pieces = [(kind, ids[k::4]) for k, kind in enumerate(('weight', 'bias', 'bn', 'bn'))]
                position += 4 * count
                i += 4
            for kind, ids in pieces:
                old_states = [per_vertex_state['state'][j] for j in ids if j in per_vertex_state['state']]
                if len(old_states) == len(ids):
                    state[new_index] = _stack_vertex_states(kind, old_states)
                params.append(new_index)
                new_index += 1
        if position != len(old_ids):
            raise ValueError(f'the saved optimizer group has {len(old_ids)} parameters, the per-vertex '
                             f'layout of this model {position}')
        groups.append({**old_group, 'params': params})
    return {'state': state, 'param_groups': groups}


class GraphResBlock(nn.Module):
    """x + graph_block2(graph_block1(x)), no activation after the sum."""

    def __init__(self, adj, dim):
        super().__init__()
        self.graph_block1 = GraphConvBlock(adj, dim, dim)
        self.graph_block2 = GraphConvBlock(adj, dim, dim)

    def forward(self, x):
        return x + self.graph_block2(self.graph_block1(x))
