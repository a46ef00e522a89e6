"""SGRE's 23 pose branches, stored stacked and decoded one tree depth at a time.

Joint j (1..23) owns the branch ``Linear(C+6, H) - ReLU - Linear(H, H) - ReLU - Linear(H, 6)``
applied to ``[g, F_img[:, j], rho_parent]`` (graph feature, the joint's image feature and the
parent's global 6D, 1920 + 2048 + 6 inputs and H = 128 at the released sizes); its output plus
``rho_parent`` is the joint's global 6D. The parent's 6D is not detached.

Storage.  The N = 23 branches' parameters are stacked along a leading joint axis, joints in
the depth order of the kinematic tree given at construction (ties by index), so the joints of
one depth are a contiguous slice. Weights keep ``nn.Linear``'s (out, in) orientation. The
first layer's weight is three parameters, one per input block: ``graph_weight`` (N, H, Cg) and
``feature_weight`` (N, H, Cf) for the inputs that do not depend on the chain, applied to all
joints before it starts (the graph feature is the same for every joint, so its block is one
matrix product), and ``parent_weight`` (N, H, 6) for the parent's 6D, applied depth by depth
inside the chain (the gradient of a per-depth piece is written into a tensor of the whole
parameter's size, so this one is kept small).

Checkpoints keep the per-joint names ``<j-1>.{0,2,4}.{weight,bias}`` (``nn.Linear`` shapes,
joint index order): ``canonical_items`` / ``stacked_items`` convert between the two layouts,
and the state-dict hooks use them, so per-joint checkpoints load strictly. The same two
functions convert optimizer states (e.g. Adam moments) shaped like the parameters.
"""

import torch
from torch import nn

from common.utils.kinematics import index_tensor, select_level, tree_plan

# own parameter -> (per-joint layer suffix, first-layer column block: 'graph', 'feature',
# 'parent', or None for a whole tensor)
_SOURCES = (
    ('graph_weight', '0.weight', 'graph'),
    ('feature_weight', '0.weight', 'feature'),
    ('parent_weight', '0.weight', 'parent'),
    ('bias1', '0.bias', None),
    ('weight2', '2.weight', None),
    ('bias2', '2.bias', None),
    ('weight3', '4.weight', None),
    ('bias3', '4.bias', None),
)
# per-joint parameters in the order of the per-joint modules (Linear 0, 2, 4; weight, bias)
_LAYER_SUFFIXES = ('0.weight', '0.bias', '2.weight', '2.bias', '4.weight', '4.bias')


class PoseBranches(nn.Module):
    """The 23 stacked pose branches (see the module docstring).

    parents: the kinematic tree (24 entries, root's ignored) that fixes the storage order;
    graph_dim: Cg, the graph feature's width; feature_dim: Cf, a joint image feature's width;
    hidden_dim: H; out_dim: 6.
    Parameters (N = joints - 1, storage order ``joint_order``): ``graph_weight`` (N, H, Cg),
    ``feature_weight`` (N, H, Cf), ``parent_weight`` (N, H, out), ``bias1`` (N, H), ``weight2`` (N, H, H), ``bias2`` (N, H),
    ``weight3`` (N, out, H), ``bias3`` (N, out).
    """

    def __init__(self, parents, graph_dim, feature_dim, hidden_dim, out_dim=6):
        super().__init__()
        self.parents = tuple(int(p) for p in parents)
        # storage position -> joint number (1..N), in depth order of ``parents``
        self.joint_order = tree_plan(self.parents).order[1:]
        self.position = {joint: pos for pos, joint in enumerate(self.joint_order)}
        self.graph_dim, self.feature_dim = graph_dim, feature_dim
        self.steady_dim = graph_dim + feature_dim  # first-layer inputs that do not depend on the chain
        self.hidden_dim, self.out_dim = hidden_dim, out_dim
        num = len(self.joint_order)
        shapes = {'graph_weight': (num, hidden_dim, graph_dim),
                  'feature_weight': (num, hidden_dim, feature_dim),
                  'parent_weight': (num, hidden_dim, out_dim), 'bias1': (num, hidden_dim),
                  'weight2': (num, hidden_dim, hidden_dim), 'bias2': (num, hidden_dim),
                  'weight3': (num, out_dim, hidden_dim), 'bias3': (num, out_dim)}
        for name, _, _ in _SOURCES:
            self.register_parameter(name, nn.Parameter(torch.empty(shapes[name])))
        self._init_like_per_joint_linear()
        self.register_state_dict_post_hook(_per_joint_state_dict)
        self.register_load_state_dict_pre_hook(_stacked_state_dict)

    # ------------------------------------------------------------------ initialisation
    def _layer_dims(self):
        """(in, out) of the per-joint Linear layers 0, 2, 4."""
        return ((self.steady_dim + self.out_dim, self.hidden_dim),
                (self.hidden_dim, self.hidden_dim), (self.hidden_dim, self.out_dim))

    @torch.no_grad()
    def _write_joint(self, joint, values):
        """Store joint ``joint``'s per-joint tensors {layer suffix: tensor} in its stacked rows."""
        stacked = self.stacked_items({f'{joint - 1}.{k}': v for k, v in values.items()},
                                     joints=(joint,))
        for name, value in stacked.items():
            getattr(self, name)[self.position[joint]].copy_(value[0])

    @torch.no_grad()
    def _init_like_per_joint_linear(self):
        """PyTorch's default Linear initialisation, drawing the random numbers in the order of
        N separately built ``Linear-ReLU-Linear-ReLU-Linear`` branches (joint index order)."""
        for joint in sorted(self.joint_order):
            values = {}
            for layer, (dim_in, dim_out) in zip((0, 2, 4), self._layer_dims()):
                linear = nn.Linear(dim_in, dim_out)
                values[f'{layer}.weight'], values[f'{layer}.bias'] = linear.weight, linear.bias
            self._write_joint(joint, values)

    @torch.no_grad()
    def init_normal_linear(self, std):
        """Weights N(0, std^2), biases 0, with the draws of ``nn.init.normal_`` on every
        per-joint Linear weight, branches in joint index order, layers 0, 2, 4 within each."""
        device = self.parent_weight.device
        for joint in sorted(self.joint_order):
            values = {}
            for layer, (dim_in, dim_out) in zip((0, 2, 4), self._layer_dims()):
                weight = torch.empty(dim_out, dim_in, device=device)
                values[f'{layer}.weight'] = nn.init.normal_(weight, std=std)
                values[f'{layer}.bias'] = torch.zeros(dim_out, device=device)
            self._write_joint(joint, values)

    # ------------------------------------------------------------------ layout conversion
    def canonical_items(self, tensors):
        """Stacked -> per-joint layout.

        tensors: {own parameter name: tensor shaped like that parameter} (values, gradients,
        optimizer moments; absent names are skipped). Returns [(name, tensor)] in the order of
        the per-joint modules' parameters: ``0.0.weight`` (H, Cg+Cf+6), ``0.0.bias``, ``0.2.weight``,
        ..., ``0.4.bias``, ``1.0.weight``, ... (branch index j-1 for joint j). Tensors are new
        (contiguous copies), so they share no memory with the inputs.
        """
        items = []
        for joint in sorted(self.joint_order):
            pos = self.position[joint]
            for suffix in _LAYER_SUFFIXES:
                if suffix == '0.weight':
                    blocks = ('graph_weight', 'feature_weight', 'parent_weight')
                    if all(name in tensors for name in blocks):
                        value = torch.cat([tensors[name][pos] for name in blocks], dim=-1)
                        items.append((f'{joint - 1}.{suffix}', value))
                    continue
                name = next(own for own, source, _ in _SOURCES if source == suffix)
                if name in tensors:
                    items.append((f'{joint - 1}.{suffix}', tensors[name][pos].clone()))
        return items

    def stacked_items(self, canonical, joints=None):
        """Per-joint -> stacked layout, the inverse of ``canonical_items``.

        canonical: {``<j-1>.<layer>.<weight|bias>``: tensor in ``nn.Linear`` shape}. Returns
        {own parameter name: stacked tensor} for every parameter whose per-joint entries are
        all present (rows in storage order; ``joints``: only these joints' rows, storage order
        kept). Raises ValueError for an entry of the wrong shape.
        """
        joints = [j for j in self.joint_order if joints is None or j in joints]
        dims = dict(zip(('0', '2', '4'), self._layer_dims()))
        stacked = {}
        for name, suffix, columns in _SOURCES:
            keys = [f'{joint - 1}.{suffix}' for joint in joints]
            if not all(key in canonical for key in keys):
                continue
            dim_in, dim_out = dims[suffix[0]]
            expected = (dim_out, dim_in) if suffix.endswith('weight') else (dim_out,)
            values = []
            for key in keys:
                value = canonical[key]
                if tuple(value.shape) != expected:
                    raise ValueError(f'{key}: shape {tuple(value.shape)}, expected {expected}')
                if columns is not None:
                    value = value[:, self._column_block(columns)]
                values.append(value)
            stacked[name] = torch.stack(values)
        return stacked

    def _column_block(self, block):
        """Columns of the per-joint first-layer weight that feed ``block``."""
        ends = {'graph': (0, self.graph_dim), 'feature': (self.graph_dim, self.steady_dim),
                'parent': (self.steady_dim, self.steady_dim + self.out_dim)}
        start, end = ends[block]
        return slice(start, end)

    # ------------------------------------------------------------------ decoding
    def stacked_in(self, order):
        """The eight parameters with rows in ``order`` (joint numbers): the parameters
        themselves for the storage order, else a gather of their rows."""
        params = [getattr(self, name) for name, _, _ in _SOURCES]
        if tuple(order) == self.joint_order:
            return params
        rows = index_tensor(tuple(self.position[j] for j in order), params[0].device)
        return [param.index_select(0, rows) for param in params]

    def forward(self, graph_feat, joint_feat, root6d, parents=None):
        """Global 6D of every joint, one step per tree depth.

        graph_feat (B, Cg); joint_feat (B, J', Cf), joint j's feature at index j; root6d (B, 6)
        the root's global 6D; parents: the tree to decode (default: the construction-time one). Returns (B, 24*6), joints in index order, root first.
        """
        plan = tree_plan(self.parents if parents is None else parents)
        order = plan.order[1:]
        batch = graph_feat.shape[0]
        graph_w, feature_w, parent_w, bias1, weight2, bias2, weight3, bias3 = self.stacked_in(order)
        num = len(order)
        if order == tuple(range(order[0], order[0] + num)):  # e.g. SMPL: a view
            features = joint_feat[:, order[0]:order[0] + num]
        else:
            features = joint_feat.index_select(1, index_tensor(order, joint_feat.device))
        # chain-independent first-layer products of all joints at once, as W @ x^T (N, H, B), so
        # each weight's gradient comes out in the weight's own layout (x @ W^T would give a
        # transposed one that autograd copies). The graph feature is the same for every joint:
        # its block is one matrix product over all joints' rows.
        graph_part = torch.addmm(bias1.reshape(-1, 1), graph_w.reshape(num * self.hidden_dim, -1),
                                 graph_feat.t())
        pre = torch.baddbmm(graph_part.view(num, self.hidden_dim, batch), feature_w,
                            features.permute(1, 2, 0)).transpose(1, 2)
        sizes = [end - start for start, end, _ in plan.levels]
        # one split per tensor: its backward is one concatenation, not one per depth
        # weights as (N, in, out) views, so each depth's products need no further reshaping
        steps = zip(pre.split(sizes), parent_w.transpose(1, 2).split(sizes),
                    weight2.transpose(1, 2).split(sizes), bias2.unsqueeze(1).split(sizes),
                    weight3.transpose(1, 2).split(sizes), bias3.unsqueeze(1).split(sizes),
                    plan.levels)
        decoded = [root6d.unsqueeze(0)]  # (1, B, 6): depth 0
        for pre_d, wp_d, w2_d, b2_d, w3_d, b3_d, (start, end, parent_sel) in steps:
            parent6d = select_level(decoded[-1], parent_sel, -3)
            if len(parent6d) != end - start:  # one parent shared by the whole depth
                parent6d = parent6d.expand(end - start, -1, -1)
            hidden = torch.relu(torch.baddbmm(pre_d, parent6d, wp_d))
            hidden = torch.relu(torch.baddbmm(b2_d, hidden, w2_d))
            decoded.append(torch.baddbmm(b3_d, hidden, w3_d) + parent6d)
        pose6d = torch.cat(decoded)  # (24, B, 6), depth order
        if plan.inverse is not None:
            pose6d = pose6d.index_select(0, index_tensor(plan.inverse, pose6d.device))
        return pose6d.transpose(0, 1).reshape(batch, -1)


def _per_joint_state_dict(module, state_dict, prefix, local_metadata):
    """state_dict post-hook: replace the stacked entries by the per-joint checkpoint names."""
    stacked = {name: state_dict.pop(prefix + name) for name, _, _ in _SOURCES
               if prefix + name in state_dict}
    for name, value in module.canonical_items(stacked):
        state_dict[prefix + name] = value


def _stacked_state_dict(module, state_dict, prefix, local_metadata, strict, missing_keys,
                        unexpected_keys, error_msgs):
    """load_state_dict pre-hook: gather per-joint checkpoint entries into the stacked names.

    A stacked parameter is made only when every joint's entry is present; otherwise the
    per-joint keys stay and load_state_dict reports them as unexpected (and the stacked name
    as missing). Entries of a wrong shape are reported as errors."""
    canonical = {key[len(prefix):]: value for key, value in state_dict.items()
                 if key.startswith(prefix) and key[len(prefix):].split('.')[0].isdigit()}
    try:
        stacked = module.stacked_items(canonical)
    except ValueError as error:
        error_msgs.append(f'{prefix}: {error}')
        return
    used = {suffix for name, suffix, _ in _SOURCES if name in stacked}
    for joint in module.joint_order:
        for suffix in used:
            del state_dict[f'{prefix}{joint - 1}.{suffix}']
    for name, value in stacked.items():
        state_dict[prefix + name] = value
