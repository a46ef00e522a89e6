"""SGRE heads: Pose2Feat, PositionNet and the sequential RotationNet (docs/METHOD.md, "Network").

Coordinates inside the heads are in *feature space*: cell indices 0..7 of the 8x8(x8)
grid, sampled with ``align_corners=True`` (cell i sits at normalised -1 + 2i/7).
"""
import torch
import torch.nn.functional as F
from torch import nn

from common.nets.layer import GraphConvBlock, GraphResBlock, make_conv_layers, make_linear_layers


def _normalise_coord(coord, size):
    """Cell index in [0, size-1] -> grid_sample coordinate in [-1, 1] (align_corners=True)."""
    return coord / (size - 1) * 2 - 1


def soft_argmax_3d(prob):
    """Expected (x, y, z) cell index of each joint's probability volume.

    prob: (B, J, D, H, W), each volume summing to 1.  Returns (B, J, 3) ordered (x, y, z).
    The marginals are summed first and then weighted by the index ranges.
    """
    depth, height, width = prob.shape[2:]
    opts = dict(dtype=prob.dtype, device=prob.device)
    x = (prob.sum(dim=(2, 3)) * torch.arange(width, **opts)).sum(dim=2, keepdim=True)
    y = (prob.sum(dim=(2, 4)) * torch.arange(height, **opts)).sum(dim=2, keepdim=True)
    z = (prob.sum(dim=(3, 4)) * torch.arange(depth, **opts)).sum(dim=2, keepdim=True)
    return torch.cat((x, y, z), dim=2)


def sample_volumes_at(volumes, coord):
    """Trilinear value of joint j's own volume at its own (x, y, z) cell coordinate.

    volumes: (B, J, D, H, W); coord: (B, J, 3) cell indices (x, y, z).  Returns (B, J, 1).
    All joints go through one ``grid_sample`` (each joint is its own batch entry);
    zero padding outside the grid, ``align_corners=True``.
    """
    batch, joints, depth, height, width = volumes.shape
    grid = torch.stack((_normalise_coord(coord[..., 0], width),
                        _normalise_coord(coord[..., 1], height),
                        _normalise_coord(coord[..., 2], depth)), dim=-1)
    sampled = F.grid_sample(volumes.reshape(batch * joints, 1, depth, height, width),
                            grid.reshape(batch * joints, 1, 1, 1, 3),
                            mode='bilinear', padding_mode='zeros', align_corners=True)
    return sampled.view(batch, joints, 1)


def sample_joint_features(feat, coord):
    """Bilinear feature vector at every joint's (x, y) cell coordinate.

    feat: (B, C, H, W); coord: (B, J, >=2) cell indices, (x, y) first.  Returns (B, J, C).
    One 4-D ``grid_sample`` with a (B, 1, J, 2) grid; zero padding, ``align_corners=True``.
    """
    height, width = feat.shape[2:]
    grid = torch.stack((_normalise_coord(coord[..., 0], width),
                        _normalise_coord(coord[..., 1], height)), dim=-1)
    sampled = F.grid_sample(feat, grid.unsqueeze(1), mode='bilinear', padding_mode='zeros',
                            align_corners=True)  # (B, C, 1, J)
    return sampled[:, :, 0].transpose(1, 2)


class Pose2Feat(nn.Module):
    """Fuses the stem feature (B,64,h,w) with the joint heatmaps (B,J,h,w) -> (B,64,h,w)."""

    def __init__(self, joint_num=30, feat_dim=64):
        super().__init__()
        self.joint_num = joint_num
        self.conv = make_conv_layers([feat_dim + joint_num, feat_dim])

    def forward(self, img_feat, joint_heatmap):
        return self.conv(torch.cat((img_feat, joint_heatmap), dim=1))


class PositionNet(nn.Module):
    """3D joint positions and confidences from the deep feature.

    ``hm_shape`` (D, H, W): cells of the per-joint volume, the output heatmap shape divided by
    the backbone stride 8, i.e. (8, 8, 8) for the usual (64, 64, 64).
    Forward: (B, 2048, H, W) -> joint_coord (B, J, 3) cell indices (x, y, z), joint_score (B, J, 1).
    """

    def __init__(self, joint_num, hm_shape, feat_dim=2048):
        super().__init__()
        self.joint_num = joint_num
        self.hm_shape = tuple(int(s) for s in hm_shape)
        self.conv = make_conv_layers([feat_dim, joint_num * self.hm_shape[0]], kernel=1, stride=1,
                                     padding=0, bnrelu_final=False)

    def forward(self, img_feat):
        batch = img_feat.shape[0]
        depth, height, width = self.hm_shape
        logits = self.conv(img_feat).view(batch, self.joint_num, depth * height * width)
        prob = F.softmax(logits, dim=2).view(batch, self.joint_num, depth, height, width)
        joint_coord = soft_argmax_3d(prob)
        joint_score = sample_volumes_at(prob, joint_coord)
        return joint_coord, joint_score


class RotationNet(nn.Module):
    """Graph feature, shape/camera heads and SGRE's sequential global 6D decoding.

    graph_adj: (15, 15) normalised adjacency; graph_joint_idx: indices of the 15 graph joints
    in the 30-joint set; parents: SMPL kintree parents (24 entries, root's unused).
    Forward: img_feat (B,2048,H,W), joint_coord (B,30,3), joint_score (B,30,1) ->
    pose6d (B,144) global 6D per SMPL joint (joint-major), shape (B,10), cam (B,3).
    See docs/METHOD.md, "Network".

    Pose decoding.  Joint j's 6D is ``pose_branch[j-1]([g, F_img[:, j], rho_parent]) + rho_parent``.
    Only each joint's parent must come first, so joints of the same tree depth are decoded
    together: the chain is as long as the tree is deep (8 depths below SMPL's root), not 23.
    The first Linear of every branch multiplies 1920 + 2048 columns that do not depend on the
    chain; they are applied to all joints at once before it, leaving a 6-column product per
    depth inside.  The branches stay 23 ``Linear-ReLU-Linear-ReLU-Linear`` modules (checkpoint
    names ``pose_branch.<j>.{0,2,4}``, no batch norm, so no running statistics); their
    parameters live in one contiguous block per layer (joints in depth order), so the stacked
    weights are a view, not a copy.  A branch that carries hooks is called as a module (its
    row of the batched result is replaced).  The per-joint loop (``decode_global_6d_per_joint``)
    is used when a branch is not a plain Linear/ReLU stack or ``decode_by_depth`` is False.
    """

    def __init__(self, graph_adj, graph_joint_idx, parents, joint_num=30, feat_dim=2048,
                 graph_dim=128, shape_dim=10, smpl_joint_num=24):
        super().__init__()
        graph_joint_num = len(graph_joint_idx)
        self.joint_num = joint_num
        self.smpl_joint_num = smpl_joint_num
        self.parents = [int(p) for p in parents]
        self.decode_by_depth = True
        self.register_buffer('graph_joint_idx', torch.as_tensor(graph_joint_idx, dtype=torch.long),
                             persistent=False)
        self.graph_block = nn.Sequential(
            GraphConvBlock(graph_adj, feat_dim + 4, graph_dim),
            *[GraphResBlock(graph_adj, graph_dim) for _ in range(4)])
        graph_flat = graph_joint_num * graph_dim
        self.shape_out = make_linear_layers([graph_flat, shape_dim], relu_final=False)
        self.cam_out = make_linear_layers([graph_flat, 3], relu_final=False)
        self.global_rot = make_linear_layers([graph_flat, 6], relu_final=False)
        self.pose_branch = nn.ModuleList(
            make_linear_layers([graph_flat + feat_dim + 6, graph_dim, graph_dim, 6], relu_final=False)
            for _ in range(smpl_joint_num - 1))
        self._schedules = {}
        self.pack_pose_branches()

    # ------------------------------------------------------------------ graph feature
    def graph_feature(self, joint_feat, joint_coord, joint_score):
        """(B,30,C), (B,30,3), (B,30,1) -> flattened vertex-major graph feature (B, 15*128)."""
        idx = self.graph_joint_idx
        feat = torch.cat((joint_feat[:, idx], joint_coord[:, idx], joint_score[:, idx]), dim=2)
        feat = self.graph_block(feat)
        return feat.reshape(feat.shape[0], -1)

    # ------------------------------------------------------------------ depth schedule
    class DepthSchedule:
        """Joints 1..J-1 grouped by tree depth.

        order: the joints in decoding order (by depth, ties by index); sizes: joints per depth;
        parent_pos: per depth, the positions of the joints' parents inside the previous depth
        (the root alone is depth 0); inverse: positions in ``[root] + order`` of joints 0..J-1.
        """

        def __init__(self, order, sizes, parent_pos, inverse):
            self.order, self.sizes, self.parent_pos, self.inverse = order, sizes, parent_pos, inverse

    @staticmethod
    def depth_schedule(parents):
        """The ``DepthSchedule`` of a tree given by ``parents`` (root 0, parents before children
        not required).  Raises ValueError for a parent outside the tree or a cycle."""
        num = len(parents)
        depth = [0] + [None] * (num - 1)

        def depth_of(joint, seen=()):
            if depth[joint] is None:
                parent = int(parents[joint])
                if not 0 <= parent < num or joint in seen:
                    raise ValueError(f'invalid kinematic tree: parents={list(parents)}')
                depth[joint] = depth_of(parent, seen + (joint,)) + 1
            return depth[joint]

        levels = [[] for _ in range(max(depth_of(j) for j in range(num)) + 1)]
        for joint in range(num):
            levels[depth[joint]].append(joint)
        order, sizes, parent_pos = [], [], []
        for previous, joints in zip(levels[:-1], levels[1:]):
            order += joints
            sizes.append(len(joints))
            parent_pos.append(tuple(previous.index(int(parents[j])) for j in joints))
        position = {joint: i for i, joint in enumerate([0] + order)}
        return RotationNet.DepthSchedule(tuple(order), tuple(sizes), tuple(parent_pos),
                                         tuple(position[j] for j in range(num)))

    def schedule(self, parents):
        """Cached ``depth_schedule`` of ``parents``."""
        key = tuple(int(p) for p in parents[1:])
        if key not in self._schedules:
            self._schedules[key] = self.depth_schedule([0] + list(key))
        return self._schedules[key]

    # ------------------------------------------------------------------ packed branch storage
    BRANCH_LAYERS = (0, 2, 4)

    def branch_parameters(self, order=None):
        """The branches' parameters as six lists (W1, b1, W2, b2, W3, b3), joints in ``order``
        (1-based joint numbers; default: the schedule of the construction-time parents)."""
        order = self.schedule(self.parents).order if order is None else order
        branches = [self.pose_branch[j - 1] for j in order]
        return [[branch[layer].weight for branch in branches] if kind == 'weight'
                else [branch[layer].bias for branch in branches]
                for layer in self.BRANCH_LAYERS for kind in ('weight', 'bias')]

    def pack_pose_branches(self):
        """Move each branch layer's parameters of all joints into one contiguous block.

        The parameters stay the same objects with the same values (only ``.data`` is
        replaced), so optimizers, names and checkpoints are unaffected; stacking them then
        costs nothing.  Done at construction and again, lazily, after ``.to()`` or a load
        with ``assign=True`` has given every parameter its own storage.
        """
        with torch.no_grad():
            for params in self.branch_parameters():
                block = torch.stack([p.detach() for p in params])
                for index, param in enumerate(params):
                    param.data = block[index]

    @staticmethod
    def packed_block(params):
        """(N, *shape) tensor sharing the memory of ``params`` if they lie back to back in one
        storage, in list order; else None."""
        first = params[0]
        storage = first.untyped_storage()
        step = first.numel()
        for index, param in enumerate(params):
            if (param.dtype != first.dtype or param.shape != first.shape
                    or not param.is_contiguous()
                    or param.untyped_storage().data_ptr() != storage.data_ptr()
                    or param.storage_offset() != first.storage_offset() + index * step):
                return None
        block = first.new_empty(0)
        return block.set_(storage, first.storage_offset(), (len(params),) + tuple(first.shape),
                          (step,) + tuple(first.stride()))

    class StackPacked(torch.autograd.Function):
        """``torch.stack(params)`` when ``block`` already holds exactly those values (a view of
        their packed storage): forward returns the block without copying, backward hands each
        parameter its slice of the block's gradient."""

        @staticmethod
        def forward(ctx, block, *params):
            return block

        @staticmethod
        def backward(ctx, grad):
            return (None,) + tuple(grad.unbind(0))

    def branch_blocks(self, order):
        """Per branch layer, the parameters of the joints in ``order`` and their stacked values.

        Returns (groups, blocks): six lists of parameters (W1, b1, W2, b2, W3, b3) and six
        tensors (N, ...) outside autograd: views of the packed storage when possible (leaf
        parameters that ``.to()`` or an assigning load split apart are re-packed first), else
        stacked copies (e.g. the parameters of a DataParallel replica).
        """
        groups = self.branch_parameters(order)
        blocks = [self.packed_block(params) for params in groups]
        if (any(block is None for block in blocks) and order == self.schedule(self.parents).order
                and all(p.is_leaf for params in groups for p in params)):
            self.pack_pose_branches()
            blocks = [self.packed_block(params) for params in groups]
        with torch.no_grad():
            blocks = [torch.stack(params) if block is None else block
                      for block, params in zip(blocks, groups)]
        return groups, blocks

    # ------------------------------------------------------------------ pose decoding
    class HoistedInputLayer(torch.autograd.Function):
        """Every joint's first branch Linear on its chain-independent inputs, in one product.

        forward(x (N,B,C), bias (N,H), parent_store, weight_block (N,H,C+P), *weights) ->
        x @ weight_block[..., :C]^T + bias, (N,B,H).  ``weights`` are the N parameters whose
        values ``weight_block`` stacks; they receive the gradients.  The remaining P columns
        (the parent's 6D) are applied later, inside the chain, with the weight outside
        autograd; their gradient (grad^T @ parent) is added here, from the parents' values the
        chain leaves in ``parent_store`` (a list), so each first-layer weight gets its whole
        gradient from one product.  Products run in the dtype autocast gives the forward product.
        """

        # On the CPU, allocations above glibc's largest mmap threshold (32 MB) get fresh pages
        # on every call, and touching them costs more than the product; the weight gradients
        # are therefore produced in groups of joints that stay below it.
        CPU_GRAD_CHUNK_BYTES = 16 << 20

        @staticmethod
        def forward(ctx, x, bias, parent_store, weight_block, *weights):
            ctx.save_for_backward(x, weight_block)
            ctx.parent_store = parent_store
            ctx.bias_dtype = bias.dtype
            lead = x.shape[-1]
            return torch.baddbmm(bias.unsqueeze(1), x, weight_block[..., :lead].transpose(1, 2))

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, grad_pre):
            x, weight_block = ctx.saved_tensors
            parent = ctx.parent_store[-1]
            dtype = grad_pre.dtype
            full_input = torch.cat((x.to(dtype), parent.to(dtype)), dim=2)  # (N, B, C+P)
            grad_out_t = grad_pre.transpose(1, 2)
            chunk = len(weight_block)
            if grad_pre.device.type == 'cpu':
                chunk = max(1, RotationNet.HoistedInputLayer.CPU_GRAD_CHUNK_BYTES
                               // max(1, weight_block[0].nbytes))
            grad_weights = []
            for start in range(0, len(weight_block), chunk):
                part = torch.bmm(grad_out_t[start:start + chunk], full_input[start:start + chunk])
                grad_weights.extend(part.to(weight_block.dtype).unbind(0))
            grad_bias = grad_pre.sum(dim=1).to(ctx.bias_dtype)
            grad_x = None
            if ctx.needs_input_grad[0]:
                grad_x = torch.bmm(grad_pre, weight_block[..., :x.shape[-1]].to(dtype)).to(x.dtype)
            return (grad_x, grad_bias, None, None) + tuple(grad_weights)

    def uses_depth_path(self):
        """The depth-batched decoder applies only to plain Linear/ReLU branches."""
        if not self.decode_by_depth:
            return False
        kinds = (nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear)
        for branch in self.pose_branch:
            if type(branch) is not nn.Sequential or len(branch) != len(kinds):
                return False
            if any(type(module) is not kind for module, kind in zip(branch, kinds)):
                return False
        return True

    @staticmethod
    def has_hooks(module):
        """Whether ``module`` or one of its children carries forward or backward hooks, which
        only a call of the module runs."""
        names = ('_forward_hooks', '_forward_pre_hooks', '_backward_hooks', '_backward_pre_hooks')
        return any(getattr(sub, name, None) for sub in module.modules() for name in names)

    def decode_global_6d_per_joint(self, graph_feat, joint_feat, parents):
        """Root from the graph feature, then joints 1..23 in index order, each a residual on its
        parent, one branch module call per joint.  Returns (B, 24*6)."""
        rot6d = [self.global_rot(graph_feat)]
        for j in range(1, self.smpl_joint_num):
            parent6d = rot6d[parents[j]]
            branch_in = torch.cat((graph_feat, joint_feat[:, j], parent6d), dim=1)
            rot6d.append(self.pose_branch[j - 1](branch_in) + parent6d)
        return torch.cat(rot6d, dim=1)

    def decode_global_6d_by_depth(self, graph_feat, joint_feat, parents):
        """Same result as ``decode_global_6d_per_joint``, one step per tree depth.  (B, 24*6)."""
        plan = self.schedule(parents)
        batch = graph_feat.shape[0]
        groups, blocks = self.branch_blocks(plan.order)
        b1, w2, b2, w3, b3 = [self.StackPacked.apply(block, *params)
                              for block, params in zip(blocks[1:], groups[1:])]
        order = torch.as_tensor(plan.order, device=joint_feat.device)
        # chain-independent inputs of every joint: [g, F_img[:, j]]  -> (N, B, 1920 + 2048)
        steady = torch.cat((graph_feat.expand(len(plan.order), batch, -1),
                            joint_feat.index_select(1, order).transpose(0, 1)), dim=2)
        parent_store = []
        pre = self.HoistedInputLayer.apply(steady, b1, parent_store, blocks[0], *groups[0])
        # the parent's columns of the first layer; their weight gradient comes from HoistedInputLayer
        parent_weight = blocks[0][..., steady.shape[-1]:].transpose(1, 2)  # (N, 6, 128)
        steps = zip(pre.split(plan.sizes), parent_weight.split(plan.sizes), w2.split(plan.sizes),
                    b2.unsqueeze(1).split(plan.sizes), w3.split(plan.sizes),
                    b3.unsqueeze(1).split(plan.sizes), plan.parent_pos)
        decoded = [self.global_rot(graph_feat).unsqueeze(0)]  # (1, B, 6): depth 0, the root
        parents_used = []
        hooked = [j for j in plan.order if self.has_hooks(self.pose_branch[j - 1])]
        start = 0
        for pre_d, wp_d, w2_d, b2_d, w3_d, b3_d, parent_pos in steps:
            parent6d = self.select_parents(decoded[-1], parent_pos)
            parents_used.append(parent6d)
            if wp_d.dtype != pre_d.dtype:  # autocast: the parent product runs in the hoisted dtype
                wp_d = wp_d.to(pre_d.dtype)
            hidden = torch.relu(torch.baddbmm(pre_d, parent6d if parent6d.dtype == pre_d.dtype
                                              else parent6d.to(pre_d.dtype), wp_d))
            hidden = torch.relu(torch.baddbmm(b2_d, hidden, w2_d.transpose(1, 2)))
            level6d = torch.baddbmm(b3_d, hidden, w3_d.transpose(1, 2)) + parent6d
            joints = plan.order[start:start + len(parent_pos)]
            if hooked and any(j in hooked for j in joints):
                level6d = self.call_hooked_branches(level6d, joints, hooked, graph_feat, joint_feat,
                                                    parent6d)
            decoded.append(level6d)
            start += len(parent_pos)
        with torch.no_grad():
            parent_store.append(torch.cat(parents_used))
        pose6d = torch.cat(decoded)  # (24, B, 6), depth order
        if plan.inverse != tuple(range(len(plan.inverse))):
            pose6d = pose6d.index_select(0, torch.as_tensor(plan.inverse, device=pose6d.device))
        return pose6d.transpose(0, 1).reshape(batch, -1)

    def call_hooked_branches(self, level6d, joints, hooked, graph_feat, joint_feat, parent6d):
        """Replace the rows of hooked branches in one depth's (M, B, 6) output by a call of the
        branch module, so its hooks run; the other rows are left untouched."""
        rows = list(level6d.unbind(0))
        for row, joint in enumerate(joints):
            if joint in hooked:
                branch_in = torch.cat((graph_feat, joint_feat[:, joint], parent6d[row]), dim=1)
                rows[row] = self.pose_branch[joint - 1](branch_in) + parent6d[row]
        return torch.stack(rows)

    @staticmethod
    def select_parents(previous, positions):
        """Rows ``positions`` of the previous depth's (M, B, 6) output, as a view when possible."""
        first = positions[0]
        if all(p == first for p in positions):
            return previous[first:first + 1].expand(len(positions), -1, -1)
        if list(positions) == list(range(first, first + len(positions))):
            return previous[first:first + len(positions)]
        return previous.index_select(0, torch.as_tensor(positions, device=previous.device))

    def decode_global_6d(self, graph_feat, joint_feat, parents):
        """Global 6D of the root and of joints 1..23 (B, 24*6); the parent's 6D is not detached,
        so gradients flow down the chain."""
        if self.uses_depth_path():
            return self.decode_global_6d_by_depth(graph_feat, joint_feat, parents)
        return self.decode_global_6d_per_joint(graph_feat, joint_feat, parents)

    def forward(self, img_feat, joint_coord, joint_score, parents=None):
        parents = self.parents if parents is None else parents
        # the grid comes from the (float32) soft-argmax, so sample a feature map of its dtype
        joint_feat = sample_joint_features(img_feat.to(joint_coord.dtype), joint_coord)
        graph_feat = self.graph_feature(joint_feat, joint_coord, joint_score)
        shape = self.shape_out(graph_feat)
        cam = self.cam_out(graph_feat)
        pose6d = self.decode_global_6d(graph_feat, joint_feat, parents)
        return pose6d, shape, cam
