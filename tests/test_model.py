"""The SGRE model end to end: checkpoint layout, a float64 straight-line reference of the
network, body model and losses (docs/METHOD.md, "Body model", "Network", "Losses"), rotation
consistency, losses on hand-made cases, devices and an overfit run."""
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.transform import Rotation
from torch import nn

from main.model import get_model
from common.nets.layer import GraphConvBlock
from common.nets.pose_branches import PoseBranches
from common.nets.loss import CoordLoss, ParamLoss, global_rotation_loss
from common.options import BodyModelPaths, GeometryOptions, ModelOptions
from common.utils.smpl import SMPL

# These tests set options on the global ``cfg``; ``cfg_state`` restores it after each test.
pytestmark = pytest.mark.usefixtures('cfg_state')

KEY_FILE = Path(__file__).parent / 'data' / 'state_dict_keys.txt'
SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
GRAPH_JOINT_IDX = [0, 1, 2, 4, 5, 7, 8, 12, 29, 16, 17, 18, 19, 20, 21]
GRAPH_SKELETON = [(0, 1), (1, 3), (3, 5), (0, 2), (2, 4), (4, 6), (0, 7), (7, 8), (7, 9), (9, 11),
                  (11, 13), (7, 10), (10, 12), (12, 14)]
GRAPH_FLIP_PAIRS = [(1, 2), (3, 4), (5, 6), (9, 10), (11, 12), (13, 14)]
BATCH = 4  # train-mode BatchNorm over 2 samples is too ill-conditioned for a float32 comparison
TEST_KEYS = ['cam_param', 'joint_img', 'joint_proj', 'joint_score', 'smpl_mesh_cam', 'smpl_pose',
             'smpl_shape', 'mesh_cam_render']
LOSS_KEYS = ['body_joint_img', 'smpl_joint_img', 'smpl_pose', 'smpl_shape', 'body_joint_proj',
             'body_joint_cam', 'smpl_joint_cam']
# The model run in float64 must equal the reference to rounding; in float32 it carries float32
# rounding amplified through ~60 layers (measured up to ~1.5e-5 norm-relative, on smpl_pose).
FLOAT64_TOL = 1e-10
FLOAT32_TOL = 5e-5
# terms multiplied by a mask derived from is_valid_fit / is_3D (float64 under default collation)
FLOAT64_TERMS = {'smpl_joint_img', 'smpl_pose', 'smpl_shape', 'body_joint_cam', 'smpl_joint_cam'}
# The released geometry (checkpoint layout tests) and a small non-square one for the numeric
# tests: 16x fewer backbone operations, and any height/width or fx/fy mix-up shows.
GEOMETRY = GeometryOptions(input_img_shape=(256, 256), output_hm_shape=(64, 64, 64), bbox_3d_size=2,
                           camera_3d_size=2.5, focal=(5000, 5000), sigma=2.5)
SMALL_GEOMETRY = GeometryOptions(input_img_shape=(128, 96), output_hm_shape=(32, 32, 24), bbox_3d_size=2,
                                 camera_3d_size=2.5, focal=(5000, 4000), sigma=2.5)


def rel_err(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def read_key_file():
    entries = []
    for line in KEY_FILE.read_text().splitlines():
        name, shape = line.split()
        entries.append((name, () if shape == 'scalar' else tuple(int(s) for s in shape.split('x'))))
    return entries


@pytest.fixture(scope='module')
def options(synthetic_smpl_dir):
    return ModelOptions(geometry=GEOMETRY, body_model=BodyModelPaths(synthetic_smpl_dir, synthetic_smpl_dir),
                        resnet_type=50, imagenet_weights=None)


@pytest.fixture(scope='module')
def small_options(options):
    return ModelOptions(geometry=SMALL_GEOMETRY, body_model=options.body_model, resnet_type=50,
                        imagenet_weights=None)


@pytest.fixture(scope='module')
def human_model(options):
    return SMPL(options.body_model)


# ============================================================================= checkpoint layout
def test_state_dict_matches_released_checkpoint_layout(human_model, options):
    model = get_model(6890, 30, 'test', human_model, options)
    state = {'module.' + k: v for k, v in model.state_dict().items()}
    expected = read_key_file()
    assert len(expected) == 1423
    assert list(state) == [name for name, _ in expected]
    for name, shape in expected:
        assert tuple(state[name].shape) == shape, name
        int_entry = name.endswith('num_batches_tracked') or name.endswith('th_faces')
        assert state[name].dtype == (torch.int64 if int_entry else torch.float32), name
    # non-persistent constants stay out of the checkpoint
    assert not any(re.search(r'adj|joint_regressor|graph_joint_idx', k) for k in state)


def test_released_format_file_loads_strict(human_model, options, tmp_path):
    gen = torch.Generator().manual_seed(0)
    network = {}
    for name, shape in read_key_file():
        if name.endswith('num_batches_tracked'):
            network[name] = torch.tensor(7, dtype=torch.int64)
        elif name.endswith('th_faces'):
            network[name] = torch.randint(0, 6890, shape, generator=gen)
        else:
            network[name] = torch.randn(shape, generator=gen)
    path = tmp_path / 'snapshot_10.pth.tar'
    torch.save({'epoch': 10, 'network': network, 'optimizer': {'state': {}, 'param_groups': []}}, path)
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    model = get_model(6890, 30, 'test', human_model, options)
    result = model.load_state_dict({k[len('module.'):]: v for k, v in ckpt['network'].items()},
                                   strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    branches = model.rotation_net.pose_branch
    assert torch.equal(branches.weight3[branches.joint_order.index(23)],
                       network['module.rotation_net.pose_branch.22.4.weight'])
    assert torch.equal(model.human_model_layer.th_posedirs, network['module.human_model_layer.th_posedirs'])
    block = model.rotation_net.graph_block[3].graph_block2
    assert block.bn.num_batches_tracked.item() == 7
    assert torch.equal(block.weight[14].t(),
                       network['module.rotation_net.graph_block.3.graph_block2.fcbn_list.14.0.weight'])
    assert torch.equal(block.bn.running_var[14 * 128:],
                       network['module.rotation_net.graph_block.3.graph_block2.fcbn_list.14.1.running_var'])


def test_train_mode_initialisation(human_model, options):
    torch.manual_seed(0)
    model = get_model(6890, 30, 'train', human_model, options)
    branches = model.rotation_net.pose_branch
    weight = torch.cat((branches.graph_weight[0], branches.feature_weight[0], branches.parent_weight[0]),
                       dim=1)
    assert abs(weight.std().item() - 0.01) < 1e-3 and torch.all(branches.bias1 == 0)
    conv = model.position_net.conv[0]
    assert abs(conv.weight.std().item() - 0.001) < 1e-4 and torch.all(conv.bias == 0)
    assert abs(model.backbone.layer3[0].conv2.weight.std().item() - 0.001) < 1e-4
    graph = model.rotation_net.graph_block[0]
    assert abs(graph.weight.std().item() - 0.01) < 1e-3 and torch.all(graph.bias == 0)
    assert torch.all(graph.bn.weight == 1) and torch.all(graph.bn.bias == 0)


# ============================================================================= float64 reference
def _ref_bn(x, sd, prefix, train, eps=1e-5):
    weight, bias = sd[prefix + '.weight'], sd[prefix + '.bias']
    dims = [d for d in range(x.dim()) if d != 1]
    if train:
        mean = x.mean(dim=dims)
        var = ((x - mean.view([1, -1] + [1] * (x.dim() - 2))) ** 2).mean(dim=dims)
    else:
        mean, var = sd[prefix + '.running_mean'], sd[prefix + '.running_var']
    shape = [1, -1] + [1] * (x.dim() - 2)
    return (x - mean.view(shape)) / torch.sqrt(var.view(shape) + eps) * weight.view(shape) + bias.view(shape)


def _ref_resnet_stages(x, sd, train):
    """layer1..layer4 of a ResNet-50 (v1.5 Bottleneck), weights from ``sd`` (prefix 'backbone.')."""
    for stage, (blocks, stride) in enumerate(zip([3, 4, 6, 3], [1, 2, 2, 2]), start=1):
        for i in range(blocks):
            p = f'backbone.layer{stage}.{i}.'
            s = stride if i == 0 else 1
            out = torch.relu(_ref_bn(F.conv2d(x, sd[p + 'conv1.weight']), sd, p + 'bn1', train))
            out = torch.relu(_ref_bn(F.conv2d(out, sd[p + 'conv2.weight'], stride=s, padding=1), sd,
                                     p + 'bn2', train))
            out = _ref_bn(F.conv2d(out, sd[p + 'conv3.weight']), sd, p + 'bn3', train)
            if i == 0:
                x = _ref_bn(F.conv2d(x, sd[p + 'downsample.0.weight'], stride=s), sd, p + 'downsample.1',
                            train)
            x = torch.relu(out + x)
    return x


def _ref_trilinear(volume, x, y, z):
    """Zero-padded trilinear interpolation of volume (D,H,W) at cell coordinates."""
    depth, height, width = volume.shape
    total = volume.new_zeros(())
    x0, y0, z0 = math.floor(x), math.floor(y), math.floor(z)
    for zi in (z0, z0 + 1):
        for yi in (y0, y0 + 1):
            for xi in (x0, x0 + 1):
                if 0 <= xi < width and 0 <= yi < height and 0 <= zi < depth:
                    w = (1 - abs(x - xi)) * (1 - abs(y - yi)) * (1 - abs(z - zi))
                    total = total + w * volume[zi, yi, xi]
    return total


def _ref_bilinear(feat, x, y):
    """Zero-padded bilinear interpolation of feat (C,H,W) at cell coordinates; returns (C,)."""
    channels, height, width = feat.shape
    total = feat.new_zeros(channels)
    x0, y0 = math.floor(x), math.floor(y)
    for yi in (y0, y0 + 1):
        for xi in (x0, x0 + 1):
            if 0 <= xi < width and 0 <= yi < height:
                total = total + (1 - abs(x - xi)) * (1 - abs(y - yi)) * feat[:, yi, xi]
    return total


def _ref_adjacency():
    adj = torch.eye(15, dtype=torch.float64)
    for i, j in GRAPH_SKELETON + GRAPH_FLIP_PAIRS:
        adj[i, j] = adj[j, i] = 1
    degree = adj.sum(0)
    # the network holds the adjacency in float32
    return (adj / torch.sqrt(degree[:, None] * degree[None, :])).float().double()


def _ref_6d_to_rotmat(c):
    a1 = torch.stack([c[0], c[2], c[4]])
    a2 = torch.stack([c[1], c[3], c[5]])
    b1 = a1 / a1.norm()
    u = a2 - (b1 @ a2) * b1
    b2 = u / u.norm()
    b3 = torch.stack([b1[1] * b2[2] - b1[2] * b2[1], b1[2] * b2[0] - b1[0] * b2[2],
                      b1[0] * b2[1] - b1[1] * b2[0]])
    return torch.stack([b1, b2, b3], dim=1)


def _ref_rotmat_to_axis_angle(R):
    """torchgeometry-0.1.2 route (matrix -> quaternion -> axis-angle) on one 3x3 matrix, in Python floats."""
    r = [[float(R[i, j]) for j in range(3)] for i in range(3)]
    t0 = 1 + r[0][0] - r[1][1] - r[2][2]
    t1 = 1 - r[0][0] + r[1][1] - r[2][2]
    t2 = 1 - r[0][0] - r[1][1] + r[2][2]
    t3 = 1 + r[0][0] + r[1][1] + r[2][2]
    if r[2][2] < 1e-6:
        if r[0][0] > r[1][1]:
            t, q = t0, (r[2][1] - r[1][2], t0, r[1][0] + r[0][1], r[0][2] + r[2][0])
        else:
            t, q = t1, (r[0][2] - r[2][0], r[1][0] + r[0][1], t1, r[2][1] + r[1][2])
    elif r[0][0] < -r[1][1]:
        t, q = t2, (r[1][0] - r[0][1], r[0][2] + r[2][0], r[2][1] + r[1][2], t2)
    else:
        t, q = t3, (t3, r[2][1] - r[1][2], r[0][2] - r[2][0], r[1][0] - r[0][1])
    w, x, y, z = (v / math.sqrt(t) * 0.5 for v in q)
    s = math.sqrt(x * x + y * y + z * z)
    theta2 = 2 * math.atan2(-s, -w) if w < 0 else 2 * math.atan2(s, w)
    k = theta2 / s if s * s > 0 else 2.0
    return [x * k, y * k, z * k]


def _ref_axis_angle_tgm(r):
    """torchgeometry angle_axis_to_rotation_matrix (Rodrigues, first order near 0) for one vector."""
    rx, ry, rz = (float(v) for v in r)
    theta2 = rx * rx + ry * ry + rz * rz
    if theta2 > 1e-6:
        theta = math.sqrt(theta2)
        wx, wy, wz = (v / (theta + 1e-6) for v in (rx, ry, rz))
        c, s = math.cos(theta), math.sin(theta)
        return torch.tensor([
            [c + wx * wx * (1 - c), wx * wy * (1 - c) - wz * s, wy * s + wx * wz * (1 - c)],
            [wz * s + wx * wy * (1 - c), c + wy * wy * (1 - c), -wx * s + wy * wz * (1 - c)],
            [-wy * s + wx * wz * (1 - c), wx * s + wy * wz * (1 - c), c + wz * wz * (1 - c)]],
            dtype=torch.float64)
    return torch.tensor([[1, -rz, ry], [rz, 1, -rx], [-ry, rx, 1]], dtype=torch.float64)


def _ref_quat_rodrigues(r):
    angle = (r + 1e-8).norm()
    axis = r / angle
    q = torch.cat([torch.cos(angle / 2)[None], torch.sin(angle / 2) * axis])
    w, x, y, z = q / q.norm()
    return torch.stack([
        torch.stack([w * w + x * x - y * y - z * z, 2 * x * y - 2 * w * z, 2 * w * y + 2 * x * z]),
        torch.stack([2 * w * z + 2 * x * y, w * w - x * x + y * y - z * z, 2 * y * z - 2 * w * x]),
        torch.stack([2 * x * z - 2 * w * y, 2 * w * x + 2 * y * z, w * w - x * x - y * y + z * z])])


def _ref_smpl(sd, pose, betas, trans):
    """SMPL vertices for one sample, joint loops and 4x4 transforms, float64."""
    p = 'human_model_layer.'
    v_template, shapedirs = sd[p + 'th_v_template'][0], sd[p + 'th_shapedirs']
    posedirs, j_regressor, weights = sd[p + 'th_posedirs'], sd[p + 'th_J_regressor'], sd[p + 'th_weights']
    rot = [_ref_quat_rodrigues(pose[3 * k:3 * k + 3]) for k in range(24)]
    eye = torch.eye(3, dtype=torch.float64)
    pose_feat = torch.cat([(rot[k] - eye).reshape(9) for k in range(1, 24)])
    v_shaped = v_template + shapedirs @ betas
    joints = j_regressor @ v_shaped
    v_posed = v_shaped + posedirs @ pose_feat

    def homogeneous(R, t):
        out = torch.eye(4, dtype=torch.float64)
        out[:3, :3], out[:3, 3] = R, t
        return out

    glob = [homogeneous(rot[0], joints[0])]
    for k in range(1, 24):
        parent = SMPL_PARENTS[k]
        glob.append(glob[parent] @ homogeneous(rot[k], joints[k] - joints[parent]))
    skin = []
    for k in range(24):
        a = glob[k].clone()
        a[:3, 3] = a[:3, 3] - a[:3, :3] @ joints[k]
        skin.append(a)
    per_vertex = torch.einsum('vk,kij->vij', weights, torch.stack(skin))
    homog = torch.cat([v_posed, torch.ones(v_posed.shape[0], 1, dtype=torch.float64)], dim=1)
    verts = torch.einsum('vij,vj->vi', per_vertex, homog)[:, :3]
    return verts + trans


def reference_features(sd, img, heatmaps, train):
    """ResNet stem, Pose2Feat, ResNet stages: (B,3,H,W), (B,30,H/4,W/4) -> (B,2048,H/32,W/32)."""
    x = torch.relu(_ref_bn(F.conv2d(img, sd['backbone.conv1.weight'], stride=2, padding=3), sd,
                           'backbone.bn1', train))
    x = F.max_pool2d(x, 3, stride=2, padding=1)
    x = torch.cat([x, heatmaps], dim=1)
    x = torch.relu(_ref_bn(F.conv2d(x, sd['pose2feat.conv.0.weight'], sd['pose2feat.conv.0.bias'], padding=1),
                           sd, 'pose2feat.conv.1', train))
    return _ref_resnet_stages(x, sd, train)


def reference_forward(sd, joint_regressor, inputs, targets, meta_info, train, geometry):
    """Straight-line float64 SGRE forward (network, body model, losses) from a state dict."""
    img, joints, mask = inputs['img'].double(), inputs['joints'].double(), inputs['joints_mask'].double()
    batch = img.shape[0]
    img_h, img_w = geometry.input_img_shape
    hm_d, hm_h, hm_w = geometry.output_hm_shape
    fx, fy = geometry.focal
    sigma = geometry.sigma
    # input heatmaps
    heatmaps = torch.zeros(batch, 30, hm_h, hm_w, dtype=torch.float64)
    grid_y, grid_x = torch.meshgrid(torch.arange(hm_h, dtype=torch.float64),
                                    torch.arange(hm_w, dtype=torch.float64), indexing='ij')
    for b in range(batch):
        for j in range(30):
            u, v = joints[b, j, 0], joints[b, j, 1]
            gauss = torch.exp(-((grid_x - u) / sigma) ** 2 / 2 - ((grid_y - v) / sigma) ** 2 / 2)
            heatmaps[b, j] = gauss * mask[b, j, 0]
    feat = reference_features(sd, img, heatmaps, train)  # (B, 2048, H/32, W/32)
    # PositionNet: one (D/8, H/8, W/8) volume per joint
    vol_d, vol_h, vol_w = hm_d // 8, hm_h // 8, hm_w // 8
    logits = F.conv2d(feat, sd['position_net.conv.0.weight'], sd['position_net.conv.0.bias'])
    logits = logits.reshape(batch, 30, vol_d, vol_h, vol_w)
    joint_img = torch.zeros(batch, 30, 3, dtype=torch.float64)
    joint_score = torch.zeros(batch, 30, 1, dtype=torch.float64)
    idx_x, idx_y, idx_z = (torch.arange(n, dtype=torch.float64) for n in (vol_w, vol_h, vol_d))
    for b in range(batch):
        for j in range(30):
            e = torch.exp(logits[b, j] - logits[b, j].max())
            prob = e / e.sum()
            xyz = [(prob * idx_x[None, None, :]).sum(), (prob * idx_y[None, :, None]).sum(),
                   (prob * idx_z[:, None, None]).sum()]
            joint_img[b, j] = torch.stack(xyz)
            joint_score[b, j, 0] = _ref_trilinear(prob, *(float(c) for c in xyz))
    # RotationNet
    joint_feat = torch.zeros(batch, 30, 2048, dtype=torch.float64)  # bilinear at (x, y) cells
    for b in range(batch):
        for j in range(30):
            joint_feat[b, j] = _ref_bilinear(feat[b], float(joint_img[b, j, 0]), float(joint_img[b, j, 1]))
    graph_in = torch.cat([joint_feat, joint_img, joint_score], dim=2)[:, GRAPH_JOINT_IDX]
    adj = _ref_adjacency()

    def graph_conv(h, prefix):
        outs = []
        for v in range(15):
            pv = f'{prefix}.fcbn_list.{v}.'
            lin = h[:, v] @ sd[pv + '0.weight'].T + sd[pv + '0.bias']
            outs.append(_ref_bn(lin, sd, pv + '1', train))
        stacked = torch.stack(outs, dim=1)
        return torch.relu(torch.stack([adj @ stacked[b] for b in range(batch)]))

    g = graph_conv(graph_in, 'rotation_net.graph_block.0')
    for i in range(1, 5):
        p = f'rotation_net.graph_block.{i}'
        g = g + graph_conv(graph_conv(g, p + '.graph_block1'), p + '.graph_block2')
    g = g.reshape(batch, -1)

    def linear(h, name):
        return h @ sd[name + '.weight'].T + sd[name + '.bias']

    shape = linear(g, 'rotation_net.shape_out.0')
    cam = linear(g, 'rotation_net.cam_out.0')
    rot6d = [linear(g, 'rotation_net.global_rot.0')]
    for j in range(1, 24):
        parent6d = rot6d[SMPL_PARENTS[j]]
        h = torch.cat([g, joint_feat[:, j], parent6d], dim=1)
        p = f'rotation_net.pose_branch.{j - 1}'
        h = torch.relu(linear(h, p + '.0'))
        h = torch.relu(linear(h, p + '.2'))
        rot6d.append(linear(h, p + '.4') + parent6d)
    # rotations
    rot_global = torch.stack([torch.stack([_ref_6d_to_rotmat(rot6d[j][b]) for j in range(24)])
                              for b in range(batch)])
    pose_aa = torch.zeros(batch, 72, dtype=torch.float64)
    for b in range(batch):
        for j in range(24):
            rel = rot_global[b, j] if j == 0 else rot_global[b, SMPL_PARENTS[j]].T @ rot_global[b, j]
            pose_aa[b, 3 * j:3 * j + 3] = torch.tensor(_ref_rotmat_to_axis_angle(rel), dtype=torch.float64)
    # camera (no render variant)
    size = geometry.camera_3d_size
    k = math.sqrt(fx * fy * size * size / (img_h * img_w))
    k = float(torch.tensor(k, dtype=torch.float32))  # the original holds k as a float32 tensor
    cam_trans = torch.stack([cam[:, 0], cam[:, 1], k / (1 + torch.exp(-cam[:, 2]))], dim=1)
    # mesh, joints and projection
    mesh = torch.stack([_ref_smpl(sd, pose_aa[b], shape[b], cam_trans[b]) for b in range(batch)])
    joint_cam = torch.stack([joint_regressor @ mesh[b] for b in range(batch)])
    px = joint_cam[:, :, 0] / (joint_cam[:, :, 2] + 1e-4) * fx + img_w / 2
    py = joint_cam[:, :, 1] / (joint_cam[:, :, 2] + 1e-4) * fy + img_h / 2
    joint_proj = torch.stack([px / img_w * hm_w, py / img_h * hm_h], dim=2)
    root = joint_cam[:, :1]
    if not train:
        return {'cam_param': cam, 'joint_img': joint_img * 8, 'joint_proj': joint_proj,
                'joint_score': joint_score, 'smpl_mesh_cam': mesh - root, 'smpl_pose': pose_aa,
                'smpl_shape': shape, 'mesh_cam_render': mesh}
    joint_cam = joint_cam - root
    # losses
    t, m = targets, meta_info
    is_3d, fit = m['is_3D'].double(), m['is_valid_fit'].double()
    body_img = (joint_img * 8 - t['orig_joint_img']).abs() * m['orig_joint_trunc'] / 8
    body_img[:, :, 2] *= is_3d[:, None]
    gt_global = torch.zeros(batch, 24, 3, 3, dtype=torch.float64)
    for b in range(batch):
        for j in range(24):
            rel = _ref_axis_angle_tgm(t['pose_param'][b, 3 * j:3 * j + 3])
            gt_global[b, j] = rel if j == 0 else gt_global[b, SMPL_PARENTS[j]] @ rel
    pose_loss = torch.zeros(batch * 24, dtype=torch.float64)
    for b in range(batch):
        for j in range(24):
            pose_loss[b * 24 + j] = ((rot_global[b, j] - gt_global[b, j]) ** 2).sum() / 9 * fit[b]
    return {
        'body_joint_img': body_img,
        'smpl_joint_img':
            (joint_img * 8 - t['fit_joint_img']).abs() * m['fit_joint_trunc'] * fit[:, None, None] / 8,
        'smpl_pose': pose_loss,
        'smpl_shape': (shape - t['shape_param']).abs() * fit[:, None],
        'body_joint_proj': (joint_proj - t['orig_joint_img'][:, :, :2]).abs() * m['orig_joint_trunc'] / 8,
        'body_joint_cam':
            (joint_cam - t['orig_joint_cam']).abs() * m['orig_joint_valid'] * is_3d[:, None, None],
        'smpl_joint_cam': (joint_cam - t['fit_joint_cam']).abs() * fit[:, None, None],
    }


def _randomise(model, seed):
    """Well-conditioned random weights (the spec's init makes the heads nearly constant)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, GraphConvBlock):  # per-vertex Linear layers, stored stacked
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) / math.sqrt(module.dim_in))
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
            elif isinstance(module, PoseBranches):  # per-joint Linear layers, stored stacked
                per_joint = {}
                for name, shape in [(n, v.shape) for n, v in module.state_dict().items()]:
                    if name.endswith('weight'):
                        per_joint[name] = torch.randn(shape, generator=gen) * math.sqrt(1.0 / shape[1])
                    else:
                        per_joint[name] = torch.randn(shape, generator=gen) * 0.1
                for name, value in module.stacked_items(per_joint).items():
                    getattr(module, name).copy_(value)
            elif isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                gain = 2.0 if isinstance(module, nn.Conv2d) else 1.0
                std = math.sqrt(gain / fan_in)
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * std)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
            elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module.weight.copy_(torch.rand(module.weight.shape, generator=gen) * 0.4 + 0.8)
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
        # Damp each residual branch so that float32 rounding is not amplified block after block
        # (a random ResNet is otherwise chaotic: ~1.4x error growth per block).
        for name, module in model.named_modules():
            if name.endswith('.bn3') or (isinstance(module, nn.BatchNorm1d) and 'graph_block2' in name):
                module.weight.mul_(0.2)
        model.position_net.conv[0].weight.mul_(1.5)  # peaked but not one-hot heatmaps
        model.rotation_net.pose_branch.weight3.mul_(4)  # relative rotations well away from 0
        model.rotation_net.cam_out[0].weight.mul_(0.05)
        model.rotation_net.cam_out[0].bias.copy_(torch.tensor([0.05, -0.05, 0.8]))
        model.rotation_net.shape_out[0].weight.mul_(0.3)


def _calibrate_bn(model, inputs):
    """BatchNorm2d running statistics = statistics of ``inputs`` so eval mode is well scaled.

    The graph BatchNorm1d layers see only BATCH samples per channel, too few for usable
    statistics, so they get random ones instead."""
    gen = torch.Generator().manual_seed(7)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        model(inputs, {}, {}, 'test')
        for bn in bns:
            bn.momentum = 0.1
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm1d):
                bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=gen) * 0.2)
                bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=gen) + 0.5)


def make_batch(seed, geometry, batch=BATCH, mask_dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    hm_w, hm_h = geometry.output_hm_shape[2], geometry.output_hm_shape[1]
    inputs = {
        'img': torch.rand(batch, 3, *geometry.input_img_shape, generator=gen),
        'joints': torch.rand(batch, 30, 2, generator=gen) * torch.tensor([hm_w - 8, hm_h - 8]) + 4,
        'joints_mask': (torch.rand(batch, 30, 1, generator=gen) > 0.2).float(),
    }
    pose = torch.randn(batch, 72, generator=gen) * 0.4
    pose[0, 6:9] = 0  # exactly zero: first-order branch of the GT conversion
    pose[1, 9:12] = 1e-4
    targets = {
        'orig_joint_img': torch.rand(batch, 30, 3, generator=gen) * 64,
        'fit_joint_img': torch.rand(batch, 30, 3, generator=gen) * 64,
        'orig_joint_cam': torch.randn(batch, 30, 3, generator=gen) * 0.3,
        'fit_joint_cam': torch.randn(batch, 30, 3, generator=gen) * 0.3,
        'pose_param': pose,
        'shape_param': torch.randn(batch, 10, generator=gen),
    }
    meta_info = {
        'orig_joint_valid': (torch.rand(batch, 30, 1, generator=gen) > 0.2).float(),
        'orig_joint_trunc': (torch.rand(batch, 30, 1, generator=gen) > 0.3).float(),
        'fit_joint_trunc': (torch.rand(batch, 30, 1, generator=gen) > 0.3).float(),
        'fit_param_valid': torch.ones(batch, 72),
        'is_valid_fit': torch.tensor([1.0, 0.0] * (batch // 2), dtype=mask_dtype),
        'is_3D': torch.tensor([0.0, 1.0] * (batch // 2), dtype=mask_dtype),
    }
    return inputs, targets, meta_info


@pytest.fixture(scope='module')
def reference_case(human_model, small_options):
    """A randomised model (float32) of the small geometry, one batch, and the float64
    reference outputs for it."""
    torch.manual_seed(0)
    model = get_model(6890, 30, 'test', human_model, small_options)
    _randomise(model, seed=1)
    inputs, targets, meta_info = make_batch(seed=2, geometry=SMALL_GEOMETRY)
    _calibrate_bn(model, inputs)
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    regressor = torch.as_tensor(human_model.joint_regressor, dtype=torch.float64)
    sd = {k: v.double() for k, v in state.items()}
    with torch.no_grad():
        ref_test = reference_forward(sd, regressor, inputs, {}, {}, False, SMALL_GEOMETRY)
    return dict(model=model, inputs=inputs, targets=targets, meta_info=meta_info, ref_test=ref_test,
                regressor=regressor, state=state)


@pytest.fixture(scope='module')
def reference_losses(reference_case):
    """The float64 reference's train-mode loss terms for ``reference_case`` (its batch statistics)."""
    case = reference_case
    sd = {k: v.double() for k, v in case['state'].items()}
    targets64 = {k: v.double() for k, v in case['targets'].items()}
    meta64 = {k: v.double() for k, v in case['meta_info'].items()}
    with torch.no_grad():
        return reference_forward(sd, case['regressor'], case['inputs'], targets64, meta64, True, SMALL_GEOMETRY)


def test_reference_parents_match_body_model(human_model):
    assert human_model.parents[1:] == SMPL_PARENTS[1:]
    assert [human_model.joints_name.index(n) for n in human_model.graph_joints_name] == GRAPH_JOINT_IDX


def _check_against_reference(out, ref, tol):
    assert list(out) == list(ref)
    for key in ref:
        assert out[key].shape == ref[key].shape, key
        err = rel_err(out[key], ref[key])
        assert err < tol, f'{key}: relative error {err:.2e}'


def test_test_mode_matches_float64_reference(reference_case):
    case = reference_case
    model = case['model']
    model.eval()
    with torch.no_grad():
        out32 = model(case['inputs'], {}, {}, 'test')
        _check_against_reference(out32, case['ref_test'], FLOAT32_TOL)
        model64 = model.double()
        try:
            inputs64 = {k: v.double() for k, v in case['inputs'].items()}
            out64 = model64(inputs64, {}, {}, 'test')
        finally:
            model.float()
    _check_against_reference(out64, case['ref_test'], FLOAT64_TOL)
    for key in TEST_KEYS:
        assert out32[key].dtype == torch.float32


def test_train_mode_losses_match_float64_reference(reference_case, reference_losses):
    case = dict(reference_case, ref_train=reference_losses)
    model = case['model']
    model.train()
    try:
        # float64 is_valid_fit / is_3D as the default collation makes them
        loss64_masks = model(case['inputs'], case['targets'], case['meta_info'], 'train')
        assert list(loss64_masks) == LOSS_KEYS
        for key in LOSS_KEYS:
            expected = torch.float64 if key in FLOAT64_TERMS else torch.float32
            assert loss64_masks[key].dtype == expected, key
        _check_against_reference(loss64_masks, case['ref_train'], FLOAT32_TOL)
        # float32 masks: same values, all float32
        meta32 = {k: v.float() for k, v in case['meta_info'].items()}
        loss32 = model(case['inputs'], case['targets'], meta32, 'train')
        for key in LOSS_KEYS:
            assert loss32[key].dtype == torch.float32
            assert torch.equal(loss32[key].double(), loss64_masks[key].double()), key
        # the model in float64 agrees with the reference to rounding
        model.double()
        to64 = lambda d: {k: v.double() for k, v in d.items()}  # noqa: E731
        loss_f64 = model(to64(case['inputs']), to64(case['targets']), to64(case['meta_info']), 'train')
        _check_against_reference(loss_f64, case['ref_train'], FLOAT64_TOL)
    finally:
        model.float()
        model.load_state_dict(case['state'])
        model.eval()


def test_channels_last_backbone_changes_no_output_beyond_rounding(reference_case):
    """The backbone runs channels-last; the same weights in the contiguous format give the
    same outputs up to float32 rounding, and the heads get a contiguous feature map."""
    import copy
    model = reference_case['model'].eval()
    assert model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    contiguous = copy.deepcopy(model).use_memory_format(torch.contiguous_format)
    assert contiguous.backbone.conv1.weight.is_contiguous()
    with torch.no_grad():
        feat = model.extract_features(reference_case['inputs'])
        reference = contiguous.extract_features(reference_case['inputs'])
    assert feat.is_contiguous()
    assert float((feat - reference).norm() / reference.norm()) < 1e-5


def test_test_outputs_keys_shapes_and_passthrough(reference_case):
    case = reference_case
    model = case['model'].eval()
    meta = {'aid': torch.arange(BATCH), 'bbox': torch.tensor([[10., 20., 100., 150.]] * BATCH),
            'img2bb_trans': torch.zeros(BATCH, 2, 3), 'bb2img_trans': torch.ones(BATCH, 2, 3),
            'tight_bbox': torch.ones(BATCH, 4), 'unrelated': torch.zeros(1)}
    targets = {'smpl_mesh_cam': torch.zeros(BATCH, 6890, 3)}
    with torch.no_grad():
        out = model(case['inputs'], targets, meta, 'test')
    assert list(out) == TEST_KEYS + ['smpl_mesh_cam_target', 'bb2img_trans', 'img2bb_trans', 'bbox',
                                     'tight_bbox', 'aid']
    shapes = {'cam_param': (BATCH, 3), 'joint_img': (BATCH, 30, 3), 'joint_proj': (BATCH, 30, 2),
              'joint_score': (BATCH, 30, 1), 'smpl_mesh_cam': (BATCH, 6890, 3), 'smpl_pose': (BATCH, 72),
              'smpl_shape': (BATCH, 10), 'mesh_cam_render': (BATCH, 6890, 3)}
    for key, shape in shapes.items():
        assert tuple(out[key].shape) == shape, key
    assert out['aid'] is meta['aid']
    # root-relative mesh = render mesh minus the regressed pelvis
    pelvis = torch.as_tensor(case['model'].human_model.joint_regressor[0]) @ out['mesh_cam_render']
    assert torch.allclose(out['smpl_mesh_cam'], out['mesh_cam_render'] - pelvis[:, None], atol=1e-5)


def test_render_variant_scales_depth_by_bbox(reference_case):
    model = reference_case['model']
    cam = torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.5, -1.0]])
    bbox = torch.tensor([[0., 0., 100., 64.], [5., 5., 512., 512.]])
    plain = model.camera_translation(cam, {'bbox': bbox})
    k = math.sqrt(5000 * 4000) * 2.5 / math.sqrt(128 * 96)  # SMALL_GEOMETRY's depth prior
    assert torch.allclose(plain[:, 2], k * torch.sigmoid(cam[:, 2]))
    assert torch.equal(plain[:, :2], cam[:, :2])
    rendered = model.camera_translation(cam, {'bbox': bbox}, render=True)
    scale = math.sqrt(128 * 96) / torch.sqrt(bbox[:, 2] * bbox[:, 3])
    assert torch.allclose(rendered[:, 2], plain[:, 2] * scale)
    assert torch.equal(rendered[:, :2], cam[:, :2])


def test_render_is_a_forward_argument(reference_case, cfg_state):
    """``render=True`` moves only the translated mesh (and its projection) in test mode; the
    global configuration's ``render`` flag is not read."""
    case = reference_case
    model = case['model'].eval()
    bbox = torch.tensor([[10., 20., 100., 150.], [0., 0., 300., 200.], [5., 5., 64., 64.],
                         [0., 0., 256., 256.]])[:BATCH]
    meta = {'bbox': bbox}
    with torch.no_grad():
        plain = model(case['inputs'], {}, meta, 'test')
        cfg_state.render = True
        assert torch.equal(model(case['inputs'], {}, meta, 'test')['mesh_cam_render'], plain['mesh_cam_render'])
        rendered = model(case['inputs'], {}, meta, 'test', render=True)
    for key in ('cam_param', 'joint_img', 'joint_score', 'smpl_pose', 'smpl_shape'):
        assert torch.equal(rendered[key], plain[key]), key
    trans = model.camera_translation(plain['cam_param'], meta, render=True)
    expected_mesh, _ = model.human_model_layer(plain['smpl_pose'], plain['smpl_shape'], trans)
    assert torch.allclose(rendered['mesh_cam_render'], expected_mesh, atol=1e-5)
    assert not torch.allclose(rendered['mesh_cam_render'], plain['mesh_cam_render'], atol=1e-3)
    # root-relative mesh: the translation cancels
    assert torch.allclose(rendered['smpl_mesh_cam'], plain['smpl_mesh_cam'], atol=1e-4)


# ============================================================================= rotations
def test_relative_pose_composes_to_predicted_global_rotations(reference_case):
    model = reference_case['model'].eval()
    captured = {}
    handle = model.rotation_net.register_forward_hook(lambda m, i, o: captured.update(pose6d=o[0]))
    try:
        with torch.no_grad():
            out = model(reference_case['inputs'], {}, {}, 'test')
    finally:
        handle.remove()
    six = captured['pose6d'].double().numpy().reshape(BATCH, 24, 3, 2)
    rel = Rotation.from_rotvec(out['smpl_pose'].double().numpy().reshape(-1, 3)).as_matrix()
    rel = rel.reshape(BATCH, 24, 3, 3)
    for b in range(BATCH):
        composed = [rel[b, 0]]
        for j in range(1, 24):
            composed.append(composed[SMPL_PARENTS[j]] @ rel[b, j])
        for j in range(24):
            a1, a2 = six[b, j, :, 0], six[b, j, :, 1]
            b1 = a1 / np.linalg.norm(a1)
            b2 = a2 - b1.dot(a2) * b1
            b2 /= np.linalg.norm(b2)
            predicted = np.stack([b1, b2, np.cross(b1, b2)], axis=1)
            assert np.allclose(composed[j], predicted, atol=2e-5), (b, j)


def test_identity_relative_rotations_have_finite_gradients(reference_case):
    """With every branch output zero each child's global 6D equals its parent's, so all relative
    rotations are exactly the identity.  The original's axis-angle gives NaN gradients there
    (0 * inf in the quaternion route); this implementation must not."""
    case = reference_case
    model = case['model']
    model.train()
    try:
        with torch.no_grad():
            model.rotation_net.pose_branch.weight3.zero_()
            model.rotation_net.pose_branch.bias3.zero_()
        feat = torch.randn(BATCH, 2048, 4, 3, generator=torch.Generator().manual_seed(4))
        loss = model.heads(feat, case['inputs'], case['targets'], case['meta_info'], 'train')
        pose = {}
        handle = model.human_model_layer.register_forward_pre_hook(lambda m, args: pose.update(aa=args[0]))
        try:
            out = model.heads(feat, case['inputs'], {}, {}, 'test')
        finally:
            handle.remove()
        assert torch.all(out['smpl_pose'][:, 3:] == 0) and torch.all(pose['aa'][:, 3:] == 0)
        sum(v.mean() for v in loss.values()).backward()
        grads = [p.grad for p in model.rotation_net.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert model.rotation_net.global_rot[0].weight.grad.abs().sum() > 0
    finally:
        model.zero_grad(set_to_none=True)
        model.load_state_dict(case['state'])
        model.eval()


# ============================================================================= losses by hand
def test_coord_and_param_loss_hand_made():
    out = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])
    gt = torch.tensor([[[0.0, 0.0, 0.0], [1.0, -2.0, 4.0]]])
    valid = torch.tensor([[[1.0], [0.0]]])
    assert torch.equal(CoordLoss()(out, gt, valid), torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]]))
    valid = torch.tensor([[[1.0], [1.0]]])
    gated = CoordLoss()(out, gt, valid, torch.tensor([0.0], dtype=torch.float64))
    assert gated.dtype == torch.float32
    assert torch.equal(gated, torch.tensor([[[1.0, 2.0, 0.0], [1.0, 2.0, 0.0]]]))
    loss = ParamLoss()(torch.tensor([[1.0, -1.0]]), torch.tensor([[0.5, 1.0]]),
                       torch.tensor([[2.0]], dtype=torch.float64))
    assert loss.dtype == torch.float64 and torch.equal(loss, torch.tensor([[1.0, 4.0]], dtype=torch.float64))


def test_global_rotation_loss_hand_made():
    """GT: L_Hip rotated 90 deg about z, all else identity; prediction: identity everywhere.
    Then L_Hip and its descendants (L_Knee, L_Ankle, L_Toe) have global R_z(90) and
    mean((I - R_z(90))^2) = 4/9; masked by is_valid_fit per sample."""
    pose = torch.zeros(2, 72)
    pose[:, 3:6] = torch.tensor([0.0, 0.0, math.pi / 2])
    pred = torch.eye(3).expand(2, 24, 3, 3)
    is_valid_fit = torch.tensor([1.0, 0.0], dtype=torch.float64)
    loss = global_rotation_loss(pred, pose, is_valid_fit, SMPL_PARENTS)
    assert loss.shape == (48,) and loss.dtype == torch.float64
    expected = torch.zeros(48, dtype=torch.float64)
    expected[[1, 4, 7, 10]] = 4 / 9
    assert torch.allclose(loss, expected, atol=1e-6)
    # a prediction equal to the GT global rotations has zero loss
    gt = torch.eye(3).repeat(1, 24, 1, 1)
    rz = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    gt[0, [1, 4, 7, 10]] = rz
    loss = global_rotation_loss(gt, pose[:1], torch.ones(1), SMPL_PARENTS)
    assert loss.dtype == torch.float32 and loss.abs().max() < 1e-6


# ============================================================================= devices / precision
def test_no_hard_coded_cuda_in_network_code():
    root = Path(__file__).resolve().parents[1]
    for rel in ('main/model.py', 'common/nets/resnet.py', 'common/nets/layer.py',
                'common/nets/module.py', 'common/nets/loss.py'):
        assert '.cuda(' not in (root / rel).read_text(), rel


@pytest.mark.slow
def test_cpu_bf16_autocast(reference_case, reference_losses):
    case = dict(reference_case, ref_train=reference_losses)
    model = case['model']
    model.train()
    try:
        with torch.autocast('cpu', dtype=torch.bfloat16):
            loss = model(case['inputs'], case['targets'], case['meta_info'], 'train')
        total = sum(v.float().mean() for v in loss.values())
        assert torch.isfinite(total)
        total.backward()
        grads = [p.grad for p in model.rotation_net.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        # bf16 keeps ~3 significant digits: the losses stay near the float32 ones
        reference_total = sum(v.mean().item() for v in case['ref_train'].values())
        assert abs(total.item() - reference_total) < 0.1 * reference_total
    finally:
        model.zero_grad(set_to_none=True)
        model.load_state_dict(case['state'])
        model.eval()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_fp16_autocast(reference_case):
    case = reference_case
    device = torch.device('cuda')
    model = case['model'].to(device)
    to_dev = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
    try:
        model.eval()
        with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            out32 = model(to_dev(case['inputs']), {}, {}, 'test')
            for key in TEST_KEYS:
                assert rel_err(out32[key].cpu(), case['ref_test'][key]) < 2 * FLOAT32_TOL, key
        model.train()
        with torch.autocast('cuda', dtype=torch.float16):
            loss = model(to_dev(case['inputs']), to_dev(case['targets']), to_dev(case['meta_info']), 'train')
        total = sum(v.float().mean() for v in loss.values())
        assert torch.isfinite(total)
        total.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    finally:
        model.zero_grad(set_to_none=True)
        model.cpu()
        model.load_state_dict(case['state'])
        model.eval()


# ============================================================================= overfit
def _synthetic_training_batch(model, geometry, num=4, seed=0):
    """Random images; joints from random poses of the synthetic body model, projected as the model does."""
    gen = torch.Generator().manual_seed(seed)
    pose = torch.randn(num, 72, generator=gen) * 0.25
    pose[:, :3] = torch.tensor([math.pi, 0.0, 0.0]) + torch.randn(num, 3, generator=gen) * 0.1
    shape = torch.randn(num, 10, generator=gen) * 0.5
    # 40 m away in a 256-pixel crop at f = 5000 px; farther in a smaller crop, so people stay in view
    depth = 40.0 * 256 / min(geometry.input_img_shape)
    trans = torch.cat([torch.randn(num, 2, generator=gen) * 0.1, torch.full((num, 1), depth)], dim=1)
    with torch.no_grad():
        joint_proj, joint_cam, _, _ = model.get_coord(pose, shape, trans)
    depth = (joint_cam[:, :, 2:] / (geometry.bbox_3d_size / 2) + 1) / 2 * geometry.output_hm_shape[0]
    joint_img = torch.cat([joint_proj, depth], dim=2)
    upper = torch.tensor(geometry.output_hm_shape[::-1], dtype=joint_img.dtype)  # (W, H, D)
    inside = ((joint_img >= 0) & (joint_img < upper)).all(dim=2, keepdim=True).float()
    ones = torch.ones(num, 30, 1)
    inputs = {'img': torch.rand(num, 3, *geometry.input_img_shape, generator=gen), 'joints': joint_proj.clone(),
              'joints_mask': inside}
    targets = {'orig_joint_img': joint_img, 'fit_joint_img': joint_img, 'orig_joint_cam': joint_cam,
               'fit_joint_cam': joint_cam, 'pose_param': pose, 'shape_param': shape}
    meta_info = {'orig_joint_valid': ones, 'orig_joint_trunc': inside, 'fit_joint_trunc': inside,
                 'fit_param_valid': torch.ones(num, 72), 'is_valid_fit': torch.ones(num, dtype=torch.float64),
                 'is_3D': torch.ones(num, dtype=torch.float64)}
    return inputs, targets, meta_info


@pytest.mark.slow
def test_overfit_four_samples(human_model, small_options):
    torch.manual_seed(0)
    model = get_model(6890, 30, 'train', human_model, small_options)
    inputs, targets, meta_info = _synthetic_training_batch(model, SMALL_GEOMETRY)
    assert meta_info['orig_joint_trunc'].mean() > 0.9  # the synthetic people are in view
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    history = []
    for _ in range(80):
        loss = model(inputs, targets, meta_info, 'train')
        total = sum(v.mean() for v in loss.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
        if total.item() <= 0.5 * history[0]:
            break
    assert all(math.isfinite(v) for v in history)
    assert min(history) <= 0.5 * history[0], history
