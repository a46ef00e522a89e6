"""SGRE heads: Pose2Feat, PositionNet and the sequential RotationNet (docs/METHOD.md, "Network").

Coordinates inside the heads are in *feature space*: cell indices 0..7 of the 8x8(x8)
grid, sampled with ``align_corners=True`` (cell i sits at normalised -1 + 2i/7).
"""
import torch
import torch.nn.functional as F
from torch import nn

from common.nets.layer import GraphConvBlock, GraphResBlock, make_conv_layers, make_linear_layers
from common.nets.pose_branches import PoseBranches


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


def bilinear_weights(coord, height, width):
    """Bilinear interpolation weights of points on an (H, W) grid of cells, zero padding.

    coord: (B, J, >=2) cell indices, (x, y) first.  Returns (B, J, H*W), row-major cells: the
    four cells around a point get (1-fx)(1-fy), fx(1-fy), (1-fx)fy, fx*fy with (fx, fy) its
    offset from the cell at floor(x, y); cells outside the grid get nothing.  ``weights @
    values`` is ``grid_sample`` (bilinear, zeros, ``align_corners=True``) at those points, up to
    float rounding (grid_sample first maps the points to [-1, 1] and back).
    """
    x, y = coord[..., 0], coord[..., 1]
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = x - x0, y - y0
    xs = torch.stack((x0, x0 + 1, x0, x0 + 1), dim=-1)
    ys = torch.stack((y0, y0, y0 + 1, y0 + 1), dim=-1)
    taps = torch.stack(((1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy), dim=-1)
    inside = (xs >= 0) & (xs <= width - 1) & (ys >= 0) & (ys <= height - 1)
    # taps outside the grid weigh 0, so clamping their index anywhere inside is harmless
    cells = (ys.clamp(0, height - 1) * width + xs.clamp(0, width - 1)).long().clamp_(0, height * width - 1)
    weights = coord.new_zeros(coord.shape[:-1] + (height * width,))
    return weights.scatter_add_(-1, cells, taps * inside)


def sample_joint_features(feat, coord):
    """Bilinear feature vector at every joint's (x, y) cell coordinate.

    feat: (B, C, H, W); coord: (B, J, >=2) cell indices, (x, y) first, of feat's dtype.
    Returns (B, J, C), zero padding outside the map (``bilinear_weights``).  One batched product
    of the (B, J, H*W) weights with the feature map; it runs in the inputs' dtype also under
    autocast, as ``grid_sample`` does.
    """
    batch, channels, height, width = feat.shape
    weights = bilinear_weights(coord, height, width)
    with torch.autocast(device_type=feat.device.type, enabled=False):
        return torch.bmm(weights, feat.reshape(batch, channels, height * width).transpose(1, 2))


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

    Pose decoding.  Joint j's 6D is ``pose_branch(joint j)([g, F_img[:, j], rho_parent]) +
    rho_parent``; ``pose_branch`` (``PoseBranches``) stores the 23 branches stacked and decodes
    one tree depth per step. Checkpoint names stay ``pose_branch.<j>.{0,2,4}.{weight,bias}``.
    """

    def __init__(self, graph_adj, graph_joint_idx, parents, feat_dim=2048, graph_dim=128, shape_dim=10):
        super().__init__()
        graph_joint_num = len(graph_joint_idx)
        self.parents = [int(p) for p in parents]
        self.register_buffer('graph_joint_idx', torch.as_tensor(graph_joint_idx, dtype=torch.long),
                             persistent=False)
        self.graph_block = nn.Sequential(
            GraphConvBlock(graph_adj, feat_dim + 4, graph_dim),
            *[GraphResBlock(graph_adj, graph_dim) for _ in range(4)])
        graph_flat = graph_joint_num * graph_dim
        self.shape_out = make_linear_layers([graph_flat, shape_dim], relu_final=False)
        self.cam_out = make_linear_layers([graph_flat, 3], relu_final=False)
        self.global_rot = make_linear_layers([graph_flat, 6], relu_final=False)
        self.pose_branch = PoseBranches(self.parents, graph_flat, feat_dim, graph_dim, 6)

    # ------------------------------------------------------------------ graph feature
    def graph_feature(self, joint_feat, joint_coord, joint_score):
        """(B,30,C), (B,30,3), (B,30,1) -> flattened vertex-major graph feature (B, 15*128)."""
        idx = self.graph_joint_idx
        feat = torch.cat((joint_feat[:, idx], joint_coord[:, idx], joint_score[:, idx]), dim=2)
        feat = self.graph_block(feat)
        return feat.reshape(feat.shape[0], -1)

    def decode_global_6d(self, graph_feat, joint_feat, parents):
        """Global 6D of the root and of joints 1..23 (B, 24*6); the parent's 6D is not detached,
        so gradients flow down the chain."""
        return self.pose_branch(graph_feat, joint_feat, self.global_rot(graph_feat), parents)

    def forward(self, img_feat, joint_coord, joint_score, parents=None):
        parents = self.parents if parents is None else parents
        # the weights come from the (float32) soft-argmax, so sample a feature map of its dtype
        joint_feat = sample_joint_features(img_feat.to(joint_coord.dtype), joint_coord)
        # stored joint-major, (J, B, C) contiguous, viewed as (B, J, C): the stacked products
        # then read every joint's (B, C) block in a BLAS layout instead of copying it per joint
        joint_feat = joint_feat.transpose(0, 1).contiguous().transpose(0, 1)
        graph_feat = self.graph_feature(joint_feat, joint_coord, joint_score)
        shape = self.shape_out(graph_feat)
        cam = self.cam_out(graph_feat)
        pose6d = self.decode_global_6d(graph_feat, joint_feat, parents)
        return pose6d, shape, cam
