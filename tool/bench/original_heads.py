"""The original model after the backbone, run operation by operation as the authors' code runs it.

The benchmark's reference.  ``original_model(model)`` copies an SGRE ``Model`` (same weights,
same batch-norm state, backbone in the contiguous memory format as in the original) and swaps
everything after the backbone for the original's way of computing it:

* PositionNet: soft-argmax from three axis sums of the softmax volume; the confidence sampled
  with one ``grid_sample`` call per joint.
* RotationNet: image features sampled one joint at a time, the 15 graph joints picked one at a
  time, graph layers with one ``Linear`` + ``BatchNorm1d`` module call per vertex (the
  adjacency copied to the device on every call), the 23 pose branches one after the other in
  joint index order.
* Rotations: 6D -> matrix, global -> relative one joint at a time, matrix -> axis-angle by
  torchgeometry 0.1.2's route (a zero fourth column, four candidate quaternions selected by
  float masks, NaN set to 0).
* SMPL: smplpytorch's ``SMPL_Layer``: one Rodrigues call per joint, forward kinematics and the
  skinning transforms one joint at a time on 4x4 homogeneous matrices, every vertex blended
  from the (B, 4, 4, 24) transforms.
* Joints regressed by a ``bmm`` with the regressor repeated over the batch; the pose loss's
  ground truth by torchgeometry's masked Rodrigues (4x4 matrices) composed one joint at a time.

The formulas are the library's (docs/METHOD.md); only the order and granularity of the
operations differ, so outputs and losses agree with the library model up to float rounding.
Parameter and buffer names are the library's: either model loads the other's state_dict.
"""
import copy

import torch
from torch import nn
from torch.nn import functional as F

from common.nets.layer import make_linear_layers
from main.model import Model


# ----------------------------------------------------------------------------- PositionNet
class OriginalPositionNet(nn.Module):
    """``PositionNet`` with the original's soft-argmax and per-joint confidence sampling.

    Shares the convolution module (``conv``) of the library's PositionNet.
    (B, 2048, 8, 8) -> joint_coord (B, J, 3) cells (x, y, z), joint_score (B, J, 1).
    """

    def __init__(self, position_net):
        super().__init__()
        self.conv = copy.deepcopy(position_net.conv)
        self.joint_num = position_net.joint_num
        self.hm_shape = position_net.hm_shape

    def _softmax_volume(self, logits):
        depth, height, width = self.hm_shape
        flat = logits.reshape(-1, self.joint_num, depth * height * width)
        return F.softmax(flat, 2).reshape(-1, self.joint_num, depth, height, width)

    def _soft_argmax(self, logits):
        depth, height, width = self.hm_shape
        volume = self._softmax_volume(logits)
        device = logits.device
        x = (volume.sum(dim=(2, 3)) * torch.arange(width).float().to(device)[None, None]).sum(2, keepdim=True)
        y = (volume.sum(dim=(2, 4)) * torch.arange(height).float().to(device)[None, None]).sum(2, keepdim=True)
        z = (volume.sum(dim=(3, 4)) * torch.arange(depth).float().to(device)[None, None]).sum(2, keepdim=True)
        return torch.cat((x, y, z), dim=2)

    def forward(self, img_feat):
        depth, height, width = self.hm_shape
        logits = self.conv(img_feat).view(-1, self.joint_num, depth, height, width)
        coord = self._soft_argmax(logits)
        volume = self._softmax_volume(logits)
        scores = []
        for j in range(self.joint_num):
            grid = torch.stack((coord[:, j, 0] / (width - 1) * 2 - 1,
                                coord[:, j, 1] / (height - 1) * 2 - 1,
                                coord[:, j, 2] / (depth - 1) * 2 - 1), 1)[:, None, None, None, :]
            sampled = F.grid_sample(volume[:, j, None], grid, align_corners=True)
            scores.append(sampled[:, 0, 0, 0, 0])
        return coord, torch.stack(scores).permute(1, 0)[:, :, None]


# ----------------------------------------------------------------------------- RotationNet
class PerVertexGraphConvBlock(nn.Module):
    """The original graph layer: vertex v's features through its own ``Linear`` then
    ``BatchNorm1d`` (``fcbn_list.<v>.{0,1}``), one module call per vertex, then ReLU(A @ F).

    adj: (V, V) normalised adjacency.  (B, V, dim_in) -> (B, V, dim_out).
    """

    def __init__(self, adj, dim_in, dim_out):
        super().__init__()
        self.adj = torch.as_tensor(adj, dtype=torch.float32)
        self.fcbn_list = nn.ModuleList(nn.Sequential(nn.Linear(dim_in, dim_out), nn.BatchNorm1d(dim_out))
                                       for _ in range(self.adj.shape[0]))

    def forward(self, x):
        feat = torch.stack([fcbn(x[:, v]) for v, fcbn in enumerate(self.fcbn_list)], dim=1)
        # a plain float32 attribute, copied to the feature's device on every call (and to float64
        # features' dtype, which the original does not run in; under autocast matmul casts anyway)
        return torch.relu(torch.matmul(self.adj.to(feat.device, torch.promote_types(feat.dtype, torch.float32)), feat))


class PerVertexGraphResBlock(nn.Module):
    """x + graph_block2(graph_block1(x)) over two ``PerVertexGraphConvBlock``."""

    def __init__(self, adj, dim):
        super().__init__()
        self.graph_block1 = PerVertexGraphConvBlock(adj, dim, dim)
        self.graph_block2 = PerVertexGraphConvBlock(adj, dim, dim)

    def forward(self, x):
        return x + self.graph_block2(self.graph_block1(x))


class OriginalRotationNet(nn.Module):
    """The original RotationNet: per-joint feature sampling, per-vertex graph layers and the 23
    pose branches one after the other in joint index order.  Same parameter names as the
    library's ``RotationNet``, so either loads the other's state_dict.  Inputs and outputs as
    ``RotationNet.forward``; ``hm_shape`` (D, H, W) cells of the feature map.
    """

    def __init__(self, graph_adj, graph_joint_idx, parents, hm_shape=(8, 8, 8), feat_dim=2048,
                 graph_dim=128, shape_dim=10):
        super().__init__()
        self.graph_joint_idx = [int(i) for i in graph_joint_idx]
        self.parents = [int(p) for p in parents]
        self.hm_shape = tuple(hm_shape)
        self.graph_block = nn.Sequential(PerVertexGraphConvBlock(graph_adj, feat_dim + 4, graph_dim),
                                         *[PerVertexGraphResBlock(graph_adj, graph_dim) for _ in range(4)])
        graph_flat = len(self.graph_joint_idx) * graph_dim
        self.shape_out = make_linear_layers([graph_flat, shape_dim])
        self.cam_out = make_linear_layers([graph_flat, 3])
        self.global_rot = make_linear_layers([graph_flat, 6])
        self.pose_branch = nn.ModuleList(make_linear_layers([graph_flat + feat_dim + 6, graph_dim, graph_dim, 6])
                                         for _ in range(len(self.parents) - 1))

    def sample_image_feature(self, img_feat, joint_coord):
        """(B, C, H, W), (B, J, >=2) cells -> (B, J, C), one ``grid_sample`` per joint."""
        _, height, width = self.hm_shape
        img_feat = img_feat.to(torch.promote_types(img_feat.dtype, torch.float32))  # .float(), float64 kept
        sampled = []
        for j in range(joint_coord.shape[1]):
            grid = torch.stack((joint_coord[:, j, 0] / (width - 1) * 2 - 1,
                                joint_coord[:, j, 1] / (height - 1) * 2 - 1), 1)[:, None, None, :]
            sampled.append(F.grid_sample(img_feat, grid, align_corners=True)[:, :, 0, 0])
        return torch.stack(sampled).permute(1, 0, 2)

    def reduce_joint_set(self, x):
        return torch.stack([x[:, i, :] for i in self.graph_joint_idx], 1)

    def forward(self, img_feat, joint_coord, joint_score, parents=None):
        parents = self.parents if parents is None else parents
        joint_feat = self.sample_image_feature(img_feat, joint_coord)
        graph_in = torch.cat((self.reduce_joint_set(joint_feat), self.reduce_joint_set(joint_coord),
                              self.reduce_joint_set(joint_score)), dim=2)
        graph_feat = self.graph_block(graph_in)
        graph_feat = graph_feat.reshape(graph_feat.shape[0], -1)
        shape, cam = self.shape_out(graph_feat), self.cam_out(graph_feat)
        rot6d = [self.global_rot(graph_feat)]
        for j in range(1, len(self.pose_branch) + 1):
            parent6d = rot6d[parents[j]]
            branch_in = torch.cat((graph_feat, joint_feat[:, j, :], parent6d), dim=1)
            rot6d.append(self.pose_branch[j - 1](branch_in) + parent6d)
        return torch.stack(rot6d, dim=1).reshape(-1, 6 * len(rot6d)), shape, cam


# ----------------------------------------------------------------------------- rotations
def rot6d_to_rotmat(x):
    """(N, 6) interleaved 6D -> (N, 3, 3) by Gram-Schmidt, columns b1, b2, b1 x b2."""
    x = x.reshape(-1, 3, 2)
    a1, a2 = x[:, :, 0], x[:, :, 1]
    b1 = F.normalize(a1)
    b2 = F.normalize(a2 - torch.einsum('bi,bi->b', b1, a2).unsqueeze(-1) * b1)
    return torch.stack((b1, b2, torch.cross(b1, b2, dim=1)), dim=-1)


def global_to_relative(global_rot, parents):
    """(B, 24, 3, 3) -> (B, 24, 3, 3), R_rel_j = R_parent^T R_j one joint at a time."""
    relative = [global_rot[:, 0]]
    for j in range(1, global_rot.shape[1]):
        relative.append(torch.matmul(global_rot[:, parents[j]].permute(0, 2, 1), global_rot[:, j]))
    return torch.stack(relative, dim=1)


def relative_to_global(relative_rot, parents):
    """(B, 24, 3, 3) -> (B, 24, 3, 3), G_j = G_parent R_j one joint at a time."""
    composed = [relative_rot[:, 0]]
    for j in range(1, relative_rot.shape[1]):
        composed.append(torch.matmul(composed[parents[j]], relative_rot[:, j]))
    return torch.stack(composed, dim=1)


def rotmat_to_quaternion_masked(rot34, eps=1e-6):
    """(N, 3, 4) -> (N, 4) (w, x, y, z): torchgeometry 0.1.2's four candidates, each multiplied
    by its float case mask and summed (the boolean-mask fix applied)."""
    r = rot34.transpose(1, 2)  # r[:, i, j] = R[j, i]
    d2 = r[:, 2, 2] < eps
    d0_d1 = r[:, 0, 0] > r[:, 1, 1]
    d0_nd1 = r[:, 0, 0] < -r[:, 1, 1]
    t0 = 1 + r[:, 0, 0] - r[:, 1, 1] - r[:, 2, 2]
    q0 = torch.stack([r[:, 1, 2] - r[:, 2, 1], t0, r[:, 0, 1] + r[:, 1, 0], r[:, 2, 0] + r[:, 0, 2]], -1)
    t1 = 1 - r[:, 0, 0] + r[:, 1, 1] - r[:, 2, 2]
    q1 = torch.stack([r[:, 2, 0] - r[:, 0, 2], r[:, 0, 1] + r[:, 1, 0], t1, r[:, 1, 2] + r[:, 2, 1]], -1)
    t2 = 1 - r[:, 0, 0] - r[:, 1, 1] + r[:, 2, 2]
    q2 = torch.stack([r[:, 0, 1] - r[:, 1, 0], r[:, 2, 0] + r[:, 0, 2], r[:, 1, 2] + r[:, 2, 1], t2], -1)
    t3 = 1 + r[:, 0, 0] + r[:, 1, 1] + r[:, 2, 2]
    q3 = torch.stack([t3, r[:, 1, 2] - r[:, 2, 1], r[:, 2, 0] - r[:, 0, 2], r[:, 0, 1] - r[:, 1, 0]], -1)
    masks = [(d2 * d0_d1), (d2 * ~d0_d1), (~d2 * d0_nd1), (~d2 * ~d0_nd1)]
    masks = [m.view(-1, 1).type_as(q0) for m in masks]
    ts = [t.repeat(4, 1).t() for t in (t0, t1, t2, t3)]
    q = q0 * masks[0] + q1 * masks[1] + q2 * masks[2] + q3 * masks[3]
    q = q / torch.sqrt(ts[0] * masks[0] + ts[1] * masks[1] + ts[2] * masks[2] + ts[3] * masks[3])
    return q * 0.5


def quaternion_to_axis_angle_masked(q):
    """(N, 4) (w, x, y, z) -> (N, 3), torchgeometry 0.1.2's ``torch.where`` route."""
    q1, q2, q3, cos_theta = q[..., 1], q[..., 2], q[..., 3], q[..., 0]
    sin_squared = q1 * q1 + q2 * q2 + q3 * q3
    sin_theta = torch.sqrt(sin_squared)
    two_theta = 2.0 * torch.where(cos_theta < 0.0, torch.atan2(-sin_theta, -cos_theta),
                                  torch.atan2(sin_theta, cos_theta))
    k = torch.where(sin_squared > 0.0, two_theta / sin_theta, 2.0 * torch.ones_like(sin_theta))
    axis_angle = torch.zeros_like(q)[..., :3]
    axis_angle[..., 0] += q1 * k
    axis_angle[..., 1] += q2 * k
    axis_angle[..., 2] += q3 * k
    return axis_angle


def rotmat_to_axis_angle(rotmat):
    """(N, 3, 3) -> (N, 3): zero fourth column, masked quaternion route, NaN set to 0 in place."""
    zero = torch.zeros((rotmat.shape[0], 3, 1), device=rotmat.device).float()
    axis_angle = quaternion_to_axis_angle_masked(rotmat_to_quaternion_masked(torch.cat([rotmat, zero], 2)))
    axis_angle = axis_angle.reshape(-1, 3)
    axis_angle[torch.isnan(axis_angle)] = 0.0
    return axis_angle


def axis_angle_to_rotmat_masked(axis_angle, eps=1e-6):
    """(N, 3) -> (N, 4, 4) homogeneous: torchgeometry 0.1.2's Rodrigues and its first-order form,
    both computed and blended by float masks on theta^2 > eps."""
    aa = axis_angle.unsqueeze(1)
    theta2 = torch.matmul(aa, aa.transpose(1, 2)).squeeze(1)
    theta = torch.sqrt(theta2)
    wx, wy, wz = torch.chunk(axis_angle / (theta + eps), 3, dim=1)
    cos, sin = torch.cos(theta), torch.sin(theta)
    normal = torch.cat([cos + wx * wx * (1.0 - cos), wx * wy * (1.0 - cos) - wz * sin, wy * sin + wx * wz * (1.0 - cos),
                        wz * sin + wx * wy * (1.0 - cos), cos + wy * wy * (1.0 - cos), -wx * sin + wy * wz * (1.0 - cos),
                        -wy * sin + wx * wz * (1.0 - cos), wx * sin + wy * wz * (1.0 - cos), cos + wz * wz * (1.0 - cos)],
                       dim=1).view(-1, 3, 3)
    rx, ry, rz = torch.chunk(axis_angle, 3, dim=1)
    one = torch.ones_like(rx)
    taylor = torch.cat([one, -rz, ry, rz, one, -rx, -ry, rx, one], dim=1).view(-1, 3, 3)
    mask = (theta2 > eps).view(-1, 1, 1)
    out = torch.eye(4).to(axis_angle.device).type_as(axis_angle).view(1, 4, 4).repeat(axis_angle.shape[0], 1, 1)
    out[..., :3, :3] = mask.type_as(theta2) * normal + (mask == False).type_as(theta2) * taylor  # noqa: E712
    return out


# ----------------------------------------------------------------------------- SMPL
def quaternion_rodrigues(axis_angle):
    """(N, 3) -> (N, 9): smplpytorch's route (angle |r + 1e-8|, normalised quaternion)."""
    angle = torch.norm(axis_angle + 1e-8, p=2, dim=1).unsqueeze(-1)
    half = angle * 0.5
    quat = torch.cat([torch.cos(half), torch.sin(half) * torch.div(axis_angle, angle)], dim=1)
    quat = quat / quat.norm(p=2, dim=1, keepdim=True)
    w, x, y, z = quat[:, 0], quat[:, 1], quat[:, 2], quat[:, 3]
    w2, x2, y2, z2 = w.pow(2), x.pow(2), y.pow(2), z.pow(2)
    return torch.stack([w2 + x2 - y2 - z2, 2 * x * y - 2 * w * z, 2 * w * y + 2 * x * z,
                        2 * w * z + 2 * x * y, w2 - x2 + y2 - z2, 2 * y * z - 2 * w * x,
                        2 * x * z - 2 * w * y, 2 * w * x + 2 * y * z, w2 - x2 - y2 + z2], dim=1)


def homogeneous_rows(top):
    """(B, 3, 4) -> (B, 4, 4) with the row (0, 0, 0, 1) appended."""
    row = top.new([0.0, 0.0, 0.0, 1.0]).view(1, 1, 4).repeat(top.shape[0], 1, 1)
    return torch.cat([top, row], 1)


class OriginalSMPLLayer(nn.Module):
    """smplpytorch's ``SMPL_Layer`` forward over the buffers of a library ``SMPLLayer``.

    (pose (B, 72) axis-angle, betas (B, 10), trans (B, 3)) -> vertices (B, 6890, 3), joints
    (B, 24, 3), metres.
    """

    BUFFERS = ('th_betas', 'th_shapedirs', 'th_posedirs', 'th_v_template', 'th_J_regressor',
               'th_weights', 'th_faces')

    def __init__(self, layer):
        super().__init__()
        for name in self.BUFFERS:
            self.register_buffer(name, getattr(layer, name).clone())
        self.kintree_parents = list(layer.kintree_parents)
        self.num_joints = len(self.kintree_parents)

    def forward(self, pose, betas, trans):
        batch = pose.shape[0]
        joints = self.num_joints
        rotmats = torch.cat([quaternion_rodrigues(pose[:, 3 * k:3 * k + 3]) for k in range(joints)], 1)
        root_rot = rotmats[:, :9].view(batch, 3, 3)
        rotmats = rotmats[:, 9:]
        pose_map = rotmats - torch.eye(3, dtype=rotmats.dtype, device=rotmats.device).view(1, 9).repeat(batch, joints - 1)
        if betas is None or bool(torch.norm(betas) == 0):
            v_shaped = self.th_v_template + torch.matmul(self.th_shapedirs, self.th_betas.transpose(1, 0)).permute(2, 0, 1)
            rest_joints = torch.matmul(self.th_J_regressor, v_shaped).repeat(batch, 1, 1)
        else:
            v_shaped = self.th_v_template + torch.matmul(self.th_shapedirs, betas.transpose(1, 0)).permute(2, 0, 1)
            rest_joints = torch.matmul(self.th_J_regressor, v_shaped)
        v_posed = v_shaped + torch.matmul(self.th_posedirs, pose_map.transpose(0, 1)).permute(2, 0, 1)

        root_j = rest_joints[:, 0, :].contiguous().view(batch, 3, 1)
        results = [homogeneous_rows(torch.cat([root_rot, root_j], 2))]
        for k in range(1, joints):
            rot = rotmats[:, (k - 1) * 9:k * 9].contiguous().view(batch, 3, 3)
            parent = self.kintree_parents[k]
            offset = (rest_joints[:, k, :] - rest_joints[:, parent, :]).contiguous().view(batch, 3, 1)
            local = homogeneous_rows(torch.cat([rot, offset], 2))
            results.append(torch.matmul(results[parent], local))

        skinning = torch.zeros((batch, 4, 4, joints), dtype=root_j.dtype, device=root_j.device)
        for k in range(joints):
            zero = torch.zeros(1, dtype=rest_joints.dtype, device=rest_joints.device)
            joint_h = torch.cat([rest_joints[:, k], zero.view(1, 1).repeat(batch, 1)], 1)
            moved = torch.bmm(results[k], joint_h.unsqueeze(2))
            skinning[:, :, :, k] = results[k] - torch.cat([moved.new_zeros((batch, 4, 3)), moved], 2)
        blended = torch.matmul(skinning, self.th_weights.transpose(0, 1))
        rest_h = torch.cat([v_posed.transpose(2, 1),
                            torch.ones((batch, 1, v_posed.shape[1]), dtype=blended.dtype, device=blended.device)], 1)
        verts = (blended * rest_h.unsqueeze(1)).sum(2).transpose(2, 1)[:, :, :3]
        joint_pos = torch.stack(results, dim=1)[:, :, :3, 3]
        if trans is not None and not bool(torch.norm(trans) == 0):
            joint_pos = joint_pos + trans.unsqueeze(1)
            verts = verts + trans.unsqueeze(1)
        return verts, joint_pos


# ----------------------------------------------------------------------------- model
class OriginalModel(Model):
    """``Model`` whose rotation conversions, joint regressor and pose loss run as the original's
    forward does (with ``OriginalPositionNet``, ``OriginalRotationNet`` and
    ``OriginalSMPLLayer`` as its modules, everything after the backbone is the original's)."""

    def regress_joints(self, mesh):
        return torch.bmm(self.joint_regressor[None, :, :].repeat(mesh.shape[0], 1, 1), mesh)

    def rotations(self, pose6d):
        batch = pose6d.shape[0]
        rot_global = rot6d_to_rotmat(pose6d.reshape(batch * 24, 6)).reshape(batch, 24, 3, 3)
        rot_rel = global_to_relative(rot_global, self.parents).reshape(batch * 24, 3, 3)
        return rot_global, rotmat_to_axis_angle(rot_rel).reshape(batch, 24 * 3)

    def pose_loss(self, rot_global, pose_param, is_valid_fit):
        batch = rot_global.shape[0]
        gt_rel = axis_angle_to_rotmat_masked(pose_param.reshape(batch * 24, 3))[:, :3, :3]
        gt_global = relative_to_global(gt_rel.reshape(batch, 24, 3, 3), self.parents).reshape(batch * 24, 3, 3)
        valid = is_valid_fit[:, None].expand(-1, 24).reshape(batch * 24, 1)
        return torch.pow(rot_global.reshape(batch * 24, 9) - gt_global.reshape(batch * 24, 9), 2).mean(dim=1) * valid[:, 0]


def original_model(model):
    """A copy of ``model`` (same weights and batch-norm state, device and dtype) that runs as the
    original: ``OriginalModel`` with the original heads and SMPL layer, backbone contiguous."""
    human_model = model.human_model
    position_net = OriginalPositionNet(model.position_net)
    rotation_net = OriginalRotationNet(human_model.graph_adj, human_model.graph_joint_idx, human_model.parents,
                                       hm_shape=model.position_net.hm_shape)
    reference = OriginalModel(copy.deepcopy(model.backbone), copy.deepcopy(model.pose2feat), position_net,
                              rotation_net, human_model, model.geometry)
    reference.human_model_layer = OriginalSMPLLayer(model.human_model_layer)
    reference.load_state_dict(model.state_dict(), strict=True)
    param = next(model.parameters())
    reference.to(param.device, param.dtype)
    return reference.use_memory_format(torch.contiguous_format)
