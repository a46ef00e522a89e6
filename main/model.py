"""The SGRE model (MODEL.md §5): backbone, Pose2Feat, PositionNet, sequential RotationNet, SMPL.

    model = get_model(vertex_num, joint_num=30, mode='train')
    losses = model(inputs, targets, meta_info, 'train')   # dict of 7 unreduced loss tensors
    out = model(inputs, targets, meta_info, 'test')       # dict of outputs (§5.8)

Units: joints in and out of the heads are in heatmap space (0..64) or feature space (0..8);
meshes in metres in the virtual camera of ``cfg.focal`` / ``cfg.princpt``.
"""
import math

import torch
from torch import nn

from main.config import cfg
from common.nets.loss import CoordLoss, ParamLoss, global_rotation_loss
from common.nets.module import Pose2Feat, PositionNet, RotationNet
from common.nets.resnet import ResNetBackbone
from common.utils.smpl import SMPL
from common.utils.transforms import global_to_relative, rot6d_to_rotmat, rotmat_to_axis_angle

# keys of meta_info copied into the test outputs, in this order (§5.8)
META_PASSTHROUGH_KEYS = ('bb2img_trans', 'img2bb_trans', 'bbox', 'tight_bbox', 'aid')


def make_gaussian_heatmaps(joints, mask, hm_size, sigma):
    """Input heatmaps (§5.3), without gradient.

    joints: (B, J, >=2) heatmap-space (x, y); mask: (B, J, 1); hm_size: (H, W).
    Returns (B, J, H, W) = exp(-((x-u)/s)^2/2 - ((y-v)/s)^2/2) * mask.
    """
    with torch.no_grad():
        joints = joints.detach()
        height, width = hm_size
        opts = dict(dtype=joints.dtype, device=joints.device)
        yy, xx = torch.meshgrid(torch.arange(height, **opts), torch.arange(width, **opts),
                                indexing='ij')
        u = joints[:, :, 0, None, None]
        v = joints[:, :, 1, None, None]
        heatmap = torch.exp(-(((xx - u) / sigma) ** 2) / 2 - (((yy - v) / sigma) ** 2) / 2)
        return heatmap * mask[:, :, :, None]


def camera_depth_scale(device):
    """k = sqrt(fx*fy*c^2 / (H*W)) of §5.6, computed in float64, returned float32 of shape (1,)."""
    fx, fy = cfg.focal
    height, width = cfg.input_img_shape
    k = math.sqrt(fx * fy * cfg.camera_3d_size * cfg.camera_3d_size / (height * width))
    return torch.tensor([k], dtype=torch.float32, device=device)


class Model(nn.Module):
    """SGRE network with its losses.  Submodule order and names follow the released checkpoints."""

    def __init__(self, backbone, pose2feat, position_net, rotation_net, human_model=None):
        super().__init__()
        human_model = human_model if human_model is not None else SMPL()
        self.backbone = backbone
        self.pose2feat = pose2feat
        self.position_net = position_net
        self.rotation_net = rotation_net
        self.human_model_layer = human_model.make_layer('neutral')
        self.coord_loss = CoordLoss()
        self.param_loss = ParamLoss()

        self.human_model = human_model
        self.root_joint_idx = human_model.root_joint_idx
        self.mesh_face = human_model.face
        self.parents = list(human_model.parents)
        self.register_buffer('joint_regressor', torch.as_tensor(human_model.joint_regressor,
                                                                dtype=torch.float32), persistent=False)

    # ------------------------------------------------------------------ pieces
    def extract_features(self, inputs):
        """Image + input 2D pose -> pose-guided feature (B, 2048, 8, 8) (§5.3, §5.4 steps 1-3)."""
        early_feat = self.backbone(inputs['img'])
        heatmaps = make_gaussian_heatmaps(inputs['joints'], inputs['joints_mask'],
                                          cfg.output_hm_shape[1:], cfg.sigma)
        pose_feat = self.pose2feat(early_feat, heatmaps)
        return self.backbone(pose_feat, skip_early=True)

    def camera_translation(self, cam_param, meta_info, mode):
        """Raw camera (B,3) -> translation (B,3) in metres (§5.6, including the render variant)."""
        k = camera_depth_scale(cam_param.device)
        if cfg.render and mode == 'test':
            height, width = cfg.input_img_shape
            bbox = meta_info['bbox']
            k = k * math.sqrt(height * width) / torch.sqrt(bbox[:, 2] * bbox[:, 3])
        t_z = k * torch.sigmoid(cam_param[:, 2])
        return torch.stack((cam_param[:, 0], cam_param[:, 1], t_z), dim=1)

    def get_coord(self, smpl_pose, smpl_shape, smpl_trans):
        """SMPL mesh, regressed joints and their projection (§5.7).

        Returns joint_proj (B,30,2) heatmap space, root-relative joint_cam (B,30,3) and
        mesh_cam (B,6890,3), and mesh_cam_render (B,6890,3) with the translation.
        """
        mesh_cam, _ = self.human_model_layer(smpl_pose, smpl_shape, smpl_trans)
        joint_cam = torch.matmul(self.joint_regressor.to(mesh_cam.dtype), mesh_cam)
        fx, fy = cfg.focal
        cx, cy = cfg.princpt
        height, width = cfg.input_img_shape
        x = joint_cam[:, :, 0] / (joint_cam[:, :, 2] + 1e-4) * fx + cx
        y = joint_cam[:, :, 1] / (joint_cam[:, :, 2] + 1e-4) * fy + cy
        x = x / width * cfg.output_hm_shape[2]
        y = y / height * cfg.output_hm_shape[1]
        joint_proj = torch.stack((x, y), dim=2)

        mesh_cam_render = mesh_cam.clone()
        root_cam = joint_cam[:, self.root_joint_idx, None, :]
        return joint_proj, joint_cam - root_cam, mesh_cam - root_cam, mesh_cam_render

    def rotations(self, pose6d):
        """Global 6D (B,144) -> global rotations (B,24,3,3) and relative axis-angle pose (B,72)."""
        batch = pose6d.shape[0]
        rot_global = rot6d_to_rotmat(pose6d.reshape(-1, 6)).reshape(batch, -1, 3, 3)
        rot_rel = global_to_relative(rot_global, self.parents)
        pose_aa = rotmat_to_axis_angle(rot_rel.reshape(-1, 3, 3)).reshape(batch, -1)
        return rot_global, pose_aa

    def heads(self, feat, inputs, targets, meta_info, mode):
        """Everything after the backbone (§5.4 steps 4-5 to §5.8), from the feature (B,2048,8,8)."""
        joint_img, joint_score = self.position_net(feat)
        pose6d, shape, cam_param = self.rotation_net(feat, joint_img.detach(), joint_score.detach(),
                                                     self.parents)
        rot_global, pose_aa = self.rotations(pose6d)
        cam_trans = self.camera_translation(cam_param, meta_info, mode)
        joint_proj, joint_cam, mesh_cam, mesh_cam_render = self.get_coord(pose_aa, shape, cam_trans)
        if mode == 'train':
            return self.losses(joint_img, joint_proj, joint_cam, rot_global, shape, targets, meta_info)
        return self.test_outputs(cam_param, joint_img, joint_proj, joint_score, mesh_cam, pose_aa,
                                 shape, mesh_cam_render, targets, meta_info)

    def forward(self, inputs, targets, meta_info, mode):
        """``mode='train'``: dict of the 7 unreduced loss terms; ``'test'``: dict of outputs (§5.8)."""
        if mode not in ('train', 'test'):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        feat = self.extract_features(inputs)
        return self.heads(feat, inputs, targets, meta_info, mode)

    # ---------------------------------------------------------------- outputs
    def losses(self, joint_img, joint_proj, joint_cam, rot_global, shape, targets, meta_info):
        """The seven loss terms of §6.2, unreduced, in the original's order."""
        is_3d = meta_info['is_3D']
        is_valid_fit = meta_info['is_valid_fit']
        loss = {}
        loss['body_joint_img'] = (1 / 8) * self.coord_loss(
            joint_img * 8, targets['orig_joint_img'], meta_info['orig_joint_trunc'], is_3d)
        loss['smpl_joint_img'] = (1 / 8) * self.coord_loss(
            joint_img * 8, targets['fit_joint_img'],
            meta_info['fit_joint_trunc'] * is_valid_fit[:, None, None])
        loss['smpl_pose'] = global_rotation_loss(rot_global, targets['pose_param'], is_valid_fit,
                                                 self.parents)
        loss['smpl_shape'] = self.param_loss(shape, targets['shape_param'], is_valid_fit[:, None])
        loss['body_joint_proj'] = (1 / 8) * self.coord_loss(
            joint_proj, targets['orig_joint_img'][:, :, :2], meta_info['orig_joint_trunc'])
        loss['body_joint_cam'] = self.coord_loss(
            joint_cam, targets['orig_joint_cam'], meta_info['orig_joint_valid'] * is_3d[:, None, None])
        loss['smpl_joint_cam'] = self.coord_loss(
            joint_cam, targets['fit_joint_cam'], is_valid_fit[:, None, None])
        return loss

    def test_outputs(self, cam_param, joint_img, joint_proj, joint_score, mesh_cam, pose_aa, shape,
                     mesh_cam_render, targets, meta_info):
        """The test-mode output dict, keys in the original's order (§5.8)."""
        out = {
            'cam_param': cam_param,
            'joint_img': joint_img * 8,
            'joint_proj': joint_proj,
            'joint_score': joint_score,
            'smpl_mesh_cam': mesh_cam,
            'smpl_pose': pose_aa,
            'smpl_shape': shape,
            'mesh_cam_render': mesh_cam_render,
        }
        if targets is not None and 'smpl_mesh_cam' in targets:
            out['smpl_mesh_cam_target'] = targets['smpl_mesh_cam']
        if meta_info is not None:
            for key in META_PASSTHROUGH_KEYS:
                if key in meta_info:
                    out[key] = meta_info[key]
        return out


def init_weights(module):
    """The original's head initialisation; matches the *exact* module type (§5.9)."""
    kind = type(module)
    if kind is nn.ConvTranspose2d:
        nn.init.normal_(module.weight, std=0.001)
    elif kind is nn.Conv2d:
        nn.init.normal_(module.weight, std=0.001)
        nn.init.constant_(module.bias, 0)
    elif kind is nn.BatchNorm2d:
        nn.init.constant_(module.weight, 1)
        nn.init.constant_(module.bias, 0)
    elif kind is nn.Linear:
        nn.init.normal_(module.weight, std=0.01)
        nn.init.constant_(module.bias, 0)


def get_model(vertex_num, joint_num, mode, human_model=None):
    """Build the SGRE ``Model`` (§5.9).  ``vertex_num`` is unused, as in the original.

    In ``'train'`` mode the backbone loads ``cfg.imagenet_weights`` (if set) and the heads get
    the original's initialisation; in ``'test'`` mode PyTorch defaults stay (a checkpoint
    follows).  ``human_model`` (an ``SMPL`` wrapper) defaults to one built from ``cfg``.
    """
    human_model = human_model if human_model is not None else SMPL()
    graph_joint_idx = [human_model.joints_name.index(name) for name in human_model.graph_joints_name]
    vectorized = not cfg.sync_bn
    backbone = ResNetBackbone(cfg.resnet_type)
    pose2feat = Pose2Feat(joint_num)
    position_net = PositionNet(joint_num)
    rotation_net = RotationNet(human_model.graph_adj, graph_joint_idx, human_model.parents,
                               joint_num=joint_num, vectorized=vectorized)
    if mode == 'train':
        backbone.init_weights()
        pose2feat.apply(init_weights)
        position_net.apply(init_weights)
        rotation_net.apply(init_weights)
    return Model(backbone, pose2feat, position_net, rotation_net, human_model)
