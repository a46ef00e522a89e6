"""Element-wise (unreduced) losses of SGRE (docs/METHOD.md, "Losses").

Masks are multiplied in by ordinary type promotion, so a float64 mask (the default
collation of the loaders' Python-float ``is_valid_fit`` / ``is_3D``) gives a float64
loss exactly as in the original; the values are the same as with float32 masks.
"""
import torch
from torch import nn

from common.utils.transforms import axis_angle_to_rotmat, relative_to_global


class CoordLoss(nn.Module):
    """|out - gt| * valid; with ``is_3d`` (B,) the z column is further gated by it (as float32)."""

    def forward(self, coord_out, coord_gt, valid, is_3d=None):
        loss = torch.abs(coord_out - coord_gt) * valid
        if is_3d is not None:
            loss_z = loss[:, :, 2:] * is_3d[:, None, None].float()
            loss = torch.cat((loss[:, :, :2], loss_z), dim=2)
        return loss


class ParamLoss(nn.Module):
    """|out - gt| * valid."""

    def forward(self, param_out, param_gt, valid):
        return torch.abs(param_out - param_gt) * valid


def gt_global_rotations(pose_param, parents):
    """GT relative axis-angle pose (B, 24*3) -> global rotation matrices (B, 24, 3, 3).

    Uses torchgeometry's Rodrigues (first-order form near zero) and G_j = G_parent(j) · R_j.
    """
    batch = pose_param.shape[0]
    rel = axis_angle_to_rotmat(pose_param.reshape(-1, 3)).reshape(batch, -1, 3, 3)
    return relative_to_global(rel, parents)


def global_rotation_loss(rot_global_pred, pose_param, is_valid_fit, parents):
    """SGRE's ``smpl_pose`` term: per joint, mean of the 9 squared entries of
    (R_pred - G_gt), times the sample's ``is_valid_fit``.

    rot_global_pred: (B, 24, 3, 3) predicted global rotations; pose_param: (B, 72);
    is_valid_fit: (B,).  Returns (B*24,) in the promoted dtype of ``is_valid_fit``.
    """
    gt_global = gt_global_rotations(pose_param, parents)
    per_joint = ((rot_global_pred - gt_global) ** 2).mean(dim=(2, 3))  # (B, 24)
    return (per_joint * is_valid_fit[:, None]).reshape(-1)
