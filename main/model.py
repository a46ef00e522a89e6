"""The SGRE model (docs/METHOD.md, "Network"): backbone, Pose2Feat, PositionNet, sequential
RotationNet, SMPL.

    model = get_model(vertex_num, joint_num=30, mode='train')      # options from cfg
    losses = model(inputs, targets, meta_info, 'train')   # dict of 7 unreduced loss tensors
    out = model(inputs, targets, meta_info, 'test')       # dict of test outputs
    out = model(inputs, targets, meta_info, 'test', render=True)   # camera for full-image rendering

``get_model`` is the one place that reads the global configuration (``cfg.model_options()``
when no ``ModelOptions`` is given); ``Model`` itself takes every geometry and camera value
from the ``GeometryOptions`` it is built with.

Units: joints in and out of the heads are in heatmap space (0..64) or feature space (0..8);
meshes in metres in the virtual crop camera of ``geometry.focal`` / ``geometry.princpt``.
"""
import math

import torch
from torch import nn

from common.nets.layer import GraphConvBlock
from common.nets.loss import CoordLoss, ParamLoss, global_rotation_loss
from common.nets.module import Pose2Feat, PositionNet, RotationNet
from common.nets.pose_branches import PoseBranches
from common.nets.resnet import ResNetBackbone
from common.utils.smpl import SMPL
from common.utils.smpl_layer import left_multiply
from common.utils.transforms import global_to_relative, rot6d_to_rotmat, rotmat_to_axis_angle

# keys of meta_info copied into the test outputs, in this order
META_PASSTHROUGH_KEYS = ('bb2img_trans', 'img2bb_trans', 'bbox', 'tight_bbox', 'aid')


def make_gaussian_heatmaps(joints, mask, hm_size, sigma):
    """Input 2D-pose heatmaps of the network, without gradient.

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


def camera_depth_scale(geometry, device):
    """Depth prior k = sqrt(fx*fy*c^2 / (H*W)) of the crop camera.

    geometry: ``GeometryOptions`` (focal (fx, fy) pixels, input_img_shape (H, W) pixels,
    camera_3d_size c metres). Computed in float64, returned as float32 of shape (1,), metres.
    """
    fx, fy = geometry.focal
    height, width = geometry.input_img_shape
    size = geometry.camera_3d_size
    k = math.sqrt(fx * fy * size * size / (height * width))
    return torch.tensor([k], dtype=torch.float32, device=device)


class Model(nn.Module):
    """SGRE network with its losses.  Submodule order and names follow the released checkpoints.

    human_model: the ``SMPL`` wrapper (its neutral layer becomes ``human_model_layer``);
    geometry: ``GeometryOptions`` of the input crop, heatmaps and virtual camera.
    """

    def __init__(self, backbone, pose2feat, position_net, rotation_net, human_model, geometry):
        super().__init__()
        self.geometry = geometry
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
        self.use_memory_format(torch.channels_last)

    def use_memory_format(self, memory_format):
        """Run the convolutional part (backbone, Pose2Feat) in ``memory_format``.

        Channels-last is the default: it measured 0.89x the whole training step's time on the CPU
        (``python tool/benchmark.py --contiguous-backbone``) and gives the same numbers up to float
        rounding; the heads always read a contiguous feature map. Returns the model.
        """
        self.image_memory_format = memory_format
        self.backbone.to(memory_format=memory_format)
        self.pose2feat.to(memory_format=memory_format)
        return self

    # ------------------------------------------------------------------ pieces
    def extract_features(self, inputs):
        """Image + input 2D pose -> pose-guided feature (B, 2048, 8, 8)."""
        early_feat = self.backbone(inputs['img'].contiguous(memory_format=self.image_memory_format))
        heatmaps = make_gaussian_heatmaps(inputs['joints'], inputs['joints_mask'],
                                          self.geometry.output_hm_shape[1:], self.geometry.sigma)
        pose_feat = self.pose2feat(early_feat, heatmaps)
        return self.backbone(pose_feat, skip_early=True).contiguous()

    def camera_translation(self, cam_param, meta_info=None, render=False):
        """Raw camera (B,3) -> translation (B,3) in metres: (c_x, c_y, k * sigmoid(c_z)).

        With ``render`` the depth prior is rescaled by sqrt(H*W / (w_bbox*h_bbox)) of
        ``meta_info['bbox']`` (B,4) [x, y, w, h] pixels, so the mesh can be rendered into the
        full image rather than the crop.
        """
        k = camera_depth_scale(self.geometry, cam_param.device)
        if render:
            height, width = self.geometry.input_img_shape
            bbox = meta_info['bbox']
            k = k * math.sqrt(height * width) / torch.sqrt(bbox[:, 2] * bbox[:, 3])
        t_z = k * torch.sigmoid(cam_param[:, 2])
        return torch.stack((cam_param[:, 0], cam_param[:, 1], t_z), dim=1)

    def get_coord(self, smpl_pose, smpl_shape, smpl_trans):
        """SMPL mesh, regressed joints and their projection into the heatmap.

        Returns joint_proj (B,30,2) heatmap space, root-relative joint_cam (B,30,3) and
        mesh_cam (B,6890,3), and mesh_cam_render (B,6890,3) with the translation.
        """
        mesh_cam, _ = self.human_model_layer(smpl_pose, smpl_shape, smpl_trans)
        joint_cam = self.regress_joints(mesh_cam)
        fx, fy = self.geometry.focal
        cx, cy = self.geometry.princpt
        height, width = self.geometry.input_img_shape
        hm_shape = self.geometry.output_hm_shape
        x = joint_cam[:, :, 0] / (joint_cam[:, :, 2] + 1e-4) * fx + cx
        y = joint_cam[:, :, 1] / (joint_cam[:, :, 2] + 1e-4) * fy + cy
        x = x / width * hm_shape[2]
        y = y / height * hm_shape[1]
        joint_proj = torch.stack((x, y), dim=2)

        mesh_cam_render = mesh_cam.clone()
        root_cam = joint_cam[:, self.root_joint_idx, None, :]
        return joint_proj, joint_cam - root_cam, mesh_cam - root_cam, mesh_cam_render

    def regress_joints(self, mesh):
        """Mesh (B,6890,3) -> the 30 joints (B,30,3) of the joint regressor, same units."""
        return left_multiply(self.joint_regressor.to(mesh.dtype), mesh)

    def rotations(self, pose6d):
        """Global 6D (B,144) -> global rotations (B,24,3,3) and relative axis-angle pose (B,72)."""
        batch = pose6d.shape[0]
        rot_global = rot6d_to_rotmat(pose6d.reshape(-1, 6)).reshape(batch, -1, 3, 3)
        rot_rel = global_to_relative(rot_global, self.parents)
        pose_aa = rotmat_to_axis_angle(rot_rel.reshape(-1, 3, 3)).reshape(batch, -1)
        return rot_global, pose_aa

    def heads(self, feat, inputs, targets, meta_info, mode, render=False):
        """Everything after the backbone, from the feature (B,2048,8,8); see ``forward``."""
        joint_img, joint_score = self.position_net(feat)
        pose6d, shape, cam_param = self.rotation_net(feat, joint_img.detach(), joint_score.detach(),
                                                     self.parents)
        rot_global, pose_aa = self.rotations(pose6d)
        cam_trans = self.camera_translation(cam_param, meta_info, render and mode == 'test')
        joint_proj, joint_cam, mesh_cam, mesh_cam_render = self.get_coord(pose_aa, shape, cam_trans)
        if mode == 'train':
            return self.losses(joint_img, joint_proj, joint_cam, rot_global, shape, targets, meta_info)
        return self.test_outputs(cam_param, joint_img, joint_proj, joint_score, mesh_cam, pose_aa,
                                 shape, mesh_cam_render, targets, meta_info)

    def forward(self, inputs, targets, meta_info, mode, render=False):
        """``mode='train'``: dict of the 7 unreduced loss terms; ``'test'``: dict of outputs.

        inputs: 'img' (B,3,H,W) normalised crop, 'joints' (B,30,>=2) heatmap-space input pose,
        'joints_mask' (B,30,1). ``render`` (test mode only) gives the mesh the camera
        translation for rendering into the full image (``camera_translation``); the other
        outputs do not change.
        """
        if mode not in ('train', 'test'):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        feat = self.extract_features(inputs)
        return self.heads(feat, inputs, targets, meta_info, mode, render)

    # ---------------------------------------------------------------- outputs
    def losses(self, joint_img, joint_proj, joint_cam, rot_global, shape, targets, meta_info):
        """The seven loss terms (docs/METHOD.md, "Losses"), unreduced, in the original's order."""
        is_3d = meta_info['is_3D']
        is_valid_fit = meta_info['is_valid_fit']
        loss = {}
        loss['body_joint_img'] = (1 / 8) * self.coord_loss(
            joint_img * 8, targets['orig_joint_img'], meta_info['orig_joint_trunc'], is_3d)
        loss['smpl_joint_img'] = (1 / 8) * self.coord_loss(
            joint_img * 8, targets['fit_joint_img'],
            meta_info['fit_joint_trunc'] * is_valid_fit[:, None, None])
        loss['smpl_pose'] = self.pose_loss(rot_global, targets['pose_param'], is_valid_fit)
        loss['smpl_shape'] = self.param_loss(shape, targets['shape_param'], is_valid_fit[:, None])
        loss['body_joint_proj'] = (1 / 8) * self.coord_loss(
            joint_proj, targets['orig_joint_img'][:, :, :2], meta_info['orig_joint_trunc'])
        loss['body_joint_cam'] = self.coord_loss(
            joint_cam, targets['orig_joint_cam'], meta_info['orig_joint_valid'] * is_3d[:, None, None])
        loss['smpl_joint_cam'] = self.coord_loss(
            joint_cam, targets['fit_joint_cam'], is_valid_fit[:, None, None])
        return loss

    def pose_loss(self, rot_global, pose_param, is_valid_fit):
        """The ``smpl_pose`` term (``global_rotation_loss``): (B*24,) per joint."""
        return global_rotation_loss(rot_global, pose_param, is_valid_fit, self.parents)

    def test_outputs(self, cam_param, joint_img, joint_proj, joint_score, mesh_cam, pose_aa, shape,
                     mesh_cam_render, targets, meta_info):
        """The test-mode output dict, keys in the original's order."""
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
    """The original's head initialisation; matches the *exact* module type (subclasses keep
    PyTorch's defaults, as in the original)."""
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
    elif kind in (GraphConvBlock, PoseBranches):  # per-vertex / per-joint Linear layers, stacked
        module.init_normal_linear(std=0.01)


def get_model(vertex_num, joint_num, mode, human_model=None, options=None):
    """Build the SGRE ``Model``.  ``vertex_num`` is unused, as in the original.

    options: ``common.options.ModelOptions`` (None: ``cfg.model_options()``, the only read of
    the global configuration). human_model: an ``SMPL`` wrapper (None: the one of
    ``options.body_model``). In ``'train'`` mode the backbone loads ``options.imagenet_weights``
    (if set) and the heads get the original's initialisation; in ``'test'`` mode PyTorch
    defaults stay (a checkpoint follows). ``nn.SyncBatchNorm.convert_sync_batchnorm`` on the
    result synchronises every BatchNorm, the graph layers' included.
    """
    if options is None:
        from main.config import cfg
        options = cfg.model_options()
    human_model = human_model if human_model is not None else SMPL(options.body_model)
    graph_joint_idx = human_model.graph_joint_idx
    backbone = ResNetBackbone(options.resnet_type)
    pose2feat = Pose2Feat(joint_num)
    feature_hm_shape = tuple(size // 8 for size in options.geometry.output_hm_shape)
    position_net = PositionNet(joint_num, hm_shape=feature_hm_shape)
    rotation_net = RotationNet(human_model.graph_adj, graph_joint_idx, human_model.parents)
    if mode == 'train':
        backbone.init_weights(options.imagenet_weights)
        pose2feat.apply(init_weights)
        position_net.apply(init_weights)
        rotation_net.apply(init_weights)
    return Model(backbone, pose2feat, position_net, rotation_net, human_model, options.geometry)
