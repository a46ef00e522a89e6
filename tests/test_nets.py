"""Network building blocks: backbone, graph layers (stacked vs per-vertex modules), PositionNet, RotationNet."""
import logging
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.nets import resnet as resnet_mod
from common.nets.layer import GraphConvBlock, GraphResBlock, make_conv_layers, make_linear_layers
from common.nets.stacked import canonical_optimizer_state, stacked_optimizer_state
from common.nets.module import (PositionNet, Pose2Feat, RotationNet, sample_joint_features,
                                sample_volumes_at, soft_argmax_3d)
from common.nets.resnet import ResNetBackbone
from tests.helpers import per_joint_branches
from tool.bench.original_heads import PerVertexGraphConvBlock, PerVertexGraphResBlock

SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
GRAPH_JOINT_IDX = [0, 1, 2, 4, 5, 7, 8, 12, 29, 16, 17, 18, 19, 20, 21]


def rel_err(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def random_adj(num_v, generator):
    a = torch.rand(num_v, num_v, generator=generator)
    return (a + a.T) / num_v


# ----------------------------------------------------------------------------- backbone
def test_resnet50_shapes_names_and_init():
    net = ResNetBackbone(50)
    assert net.out_channels == 2048
    names = dict(net.named_parameters())
    assert names['conv1.weight'].shape == (64, 3, 7, 7)
    assert names['layer1.0.downsample.0.weight'].shape == (256, 64, 1, 1)
    assert names['layer4.2.conv3.weight'].shape == (2048, 512, 1, 1)
    assert 'fc.weight' not in names
    assert [len(getattr(net, f'layer{i}')) for i in range(1, 5)] == [3, 4, 6, 3]
    # stride on the 3x3 conv (v1.5)
    assert net.layer2[0].conv2.stride == (2, 2) and net.layer2[0].conv1.stride == (1, 1)
    conv_w = torch.cat([m.weight.flatten() for m in net.modules() if isinstance(m, nn.Conv2d)])
    assert abs(conv_w.std().item() - 0.001) < 5e-5 and abs(conv_w.mean().item()) < 5e-5
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    net.eval()
    with torch.no_grad():
        stem = net(torch.rand(1, 3, 64, 64))
        deep = net(stem, skip_early=True)
    assert stem.shape == (1, 64, 16, 16) and deep.shape == (1, 2048, 2, 2)


def test_resnet_depths():
    net = ResNetBackbone(101)
    assert [len(getattr(net, f'layer{i}')) for i in range(1, 5)] == [3, 4, 23, 3]
    assert net.out_channels == 2048
    for depth in (18, 34, 77):
        with pytest.raises(ValueError, match='50, 101, 152'):
            ResNetBackbone(depth)


def test_resnet_init_weights_from_local_file(tmp_path, caplog):
    import torchvision
    reference = torchvision.models.resnet50(weights=None)
    path = tmp_path / 'resnet50.pth'
    torch.save(reference.state_dict(), path)
    net = ResNetBackbone(50)
    assert net.init_weights(str(path)) is True
    for name, value in net.state_dict().items():
        assert torch.equal(value, reference.state_dict()[name]), name

    # missing file: clear error naming the file and the config key
    with pytest.raises(FileNotFoundError, match='nope.pth.*cfg.imagenet_weights'):
        net.init_weights(str(tmp_path / 'nope.pth'))
    # wrong architecture: strict load fails with the file named
    torch.save({'conv1.weight': torch.zeros(1)}, tmp_path / 'bad.pth')
    with pytest.raises(RuntimeError, match='bad.pth'):
        net.init_weights(tmp_path / 'bad.pth')

    # None: logged once, weights untouched
    resnet_mod._warned_no_imagenet = False
    before = net.conv1.weight.clone()
    with caplog.at_level(logging.WARNING, logger='common.nets.resnet'):
        assert net.init_weights(None) is False
        assert net.init_weights(None) is False
    assert sum('No ImageNet weights' in r.getMessage() for r in caplog.records) == 1
    assert torch.equal(before, net.conv1.weight)


# ----------------------------------------------------------------------------- builders
def test_stack_builders_indices():
    conv = make_conv_layers([94, 64])
    assert [type(m) for m in conv] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert conv[0].bias is not None and conv[0].padding == (1, 1)
    conv = make_conv_layers([2048, 240], kernel=1, padding=0, bnrelu_final=False)
    assert [type(m) for m in conv] == [nn.Conv2d]
    lin = make_linear_layers([3974, 128, 128, 6], relu_final=False)
    assert [type(m) for m in lin] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]


# ----------------------------------------------------------------------------- graph layers
def _randomise_bn(model, generator):
    """Random BatchNorm affine parameters and running statistics (the defaults are 1 / 0)."""
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm1d):
                bn.weight.copy_(torch.rand(bn.weight.shape, generator=generator) + 0.5)
                bn.bias.copy_(torch.randn(bn.bias.shape, generator=generator))
                bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=generator))
                bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=generator) + 0.5)


def _per_vertex_grads(stacked_model, reference):
    """The stacked model's parameter gradients under the reference's per-vertex names."""
    grads = {}
    for name, module in stacked_model.named_modules():
        if not isinstance(module, GraphConvBlock):
            continue
        prefix = name + '.' if name else ''
        channels = module.dim_out
        for v in range(module.vertex_num):
            grads[f'{prefix}fcbn_list.{v}.0.weight'] = module.weight.grad[v].t()
            grads[f'{prefix}fcbn_list.{v}.0.bias'] = module.bias.grad[v]
            grads[f'{prefix}fcbn_list.{v}.1.weight'] = module.bn.weight.grad[v * channels:(v + 1) * channels]
            grads[f'{prefix}fcbn_list.{v}.1.bias'] = module.bn.bias.grad[v * channels:(v + 1) * channels]
    assert set(grads) == {name for name, _ in reference.named_parameters()}
    return grads


def _state_equal(fast, reference, tol):
    fast_state, ref_state = fast.state_dict(), reference.state_dict()
    assert list(fast_state) == list(ref_state)
    for name, ref in ref_state.items():
        if ref.dtype == torch.int64:
            assert torch.equal(fast_state[name], ref), name
        else:
            assert rel_err(fast_state[name], ref) <= tol, name


@pytest.mark.parametrize('momentum', [0.1, None])
def test_graph_blocks_equal_per_vertex_modules(momentum):
    """Stacked blocks vs the per-vertex modules they replace, over three training steps and
    in eval mode: outputs, input and parameter gradients, running statistics, counters."""
    gen = torch.Generator().manual_seed(0)
    adj = random_adj(15, gen)
    reference = nn.Sequential(PerVertexGraphConvBlock(adj, 40, 16), PerVertexGraphResBlock(adj, 16))
    stacked = nn.Sequential(GraphConvBlock(adj, 40, 16), GraphResBlock(adj, 16))
    _randomise_bn(reference, gen)
    for model in (reference, stacked):
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.momentum = momentum
    assert stacked.load_state_dict(reference.state_dict(), strict=True)
    _state_equal(stacked, reference, 0)
    for step in range(3):
        x = torch.randn(5, 15, 40, generator=gen)
        x_fast, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
        grad_out = torch.randn(5, 15, 16, generator=gen)
        out_fast, out_ref = stacked(x_fast), reference(x_ref)
        assert rel_err(out_fast, out_ref) < 1e-5
        out_fast.backward(grad_out)
        out_ref.backward(grad_out)
        assert rel_err(x_fast.grad, x_ref.grad) < 1e-5
        fast_grads = _per_vertex_grads(stacked, reference)
        ref_params = dict(reference.named_parameters())
        for name, p_ref in ref_params.items():
            if name.endswith('.0.bias'):
                # A Linear bias in front of a train-mode BatchNorm has zero gradient up to
                # rounding: measure the difference on the scale of that Linear's weight gradient.
                scale = ref_params[name[:-4] + 'weight'].grad.norm()
                assert (fast_grads[name] - p_ref.grad).norm() / scale < 1e-5, name
            else:
                assert rel_err(fast_grads[name], p_ref.grad) < 1e-5, name
        _state_equal(stacked, reference, 1e-5)
    assert stacked.state_dict()['0.fcbn_list.3.1.num_batches_tracked'].item() == 3
    stacked.eval()
    reference.eval()
    x = torch.randn(3, 15, 40, generator=gen)
    assert rel_err(stacked(x), reference(x)) < 1e-5
    _state_equal(stacked, reference, 1e-5)


def test_per_vertex_optimizer_state_resumes_on_stacked_blocks():
    """Adam state saved with per-vertex modules, converted: the next step matches the
    per-vertex run's next step."""
    gen = torch.Generator().manual_seed(5)
    adj = random_adj(15, gen)

    def model_pair():
        # no bias in front of the graph blocks: train-mode BatchNorm would make its gradient pure
        # rounding noise, which Adam scales up to full steps
        reference = nn.Sequential(nn.Linear(3, 40, bias=False), PerVertexGraphConvBlock(adj, 40, 8),
                                  PerVertexGraphResBlock(adj, 8))
        stacked = nn.Sequential(nn.Linear(3, 40, bias=False), GraphConvBlock(adj, 40, 8), GraphResBlock(adj, 8))
        return reference, stacked

    reference, stacked = model_pair()
    _randomise_bn(reference, gen)
    inputs = [torch.randn(6, 15, 3, generator=gen) for _ in range(3)]
    ref_opt = torch.optim.Adam([{'params': reference[0].parameters(), 'lr': 1e-2},
                                {'params': list(reference[1:].parameters())}], lr=1e-3)
    for x in inputs[:2]:
        ref_opt.zero_grad()
        reference(x).pow(2).mean().backward()
        ref_opt.step()
    stacked.load_state_dict(reference.state_dict())
    opt = torch.optim.Adam([{'params': stacked[0].parameters(), 'lr': 1e-2},
                            {'params': list(stacked[1:].parameters())}], lr=1e-3)
    with pytest.raises(ValueError):
        opt.load_state_dict(ref_opt.state_dict())  # the layouts differ
    opt.load_state_dict(stacked_optimizer_state(stacked, opt, ref_opt.state_dict()))
    assert opt.param_groups[0]['lr'] == 1e-2
    for v in (0, 14):  # moments moved with their parameters
        ref_state = ref_opt.state[reference[1].fcbn_list[v][0].weight]
        assert torch.equal(opt.state[stacked[1].weight]['exp_avg_sq'][v], ref_state['exp_avg_sq'].t())
        ref_state = ref_opt.state[reference[2].graph_block2.fcbn_list[v][1].bias]
        assert torch.equal(opt.state[stacked[2].graph_block2.bn.bias]['exp_avg'][v * 8:(v + 1) * 8],
                           ref_state['exp_avg'])
    # written back in the per-vertex layout, the state is the reference optimizer's, exactly
    _optimizer_states_equal(canonical_optimizer_state(stacked, opt), ref_opt.state_dict(), exact=True)
    for model, optimizer in ((reference, ref_opt), (stacked, opt)):
        optimizer.zero_grad()
        model(inputs[2]).pow(2).mean().backward()
        optimizer.step()
    fast_state, ref_state = stacked.state_dict(), reference.state_dict()
    for name, ref in ref_state.items():
        if re.search(r'fcbn_list\.\d+\.0\.bias', name):
            # Linear biases before train-mode BatchNorm get rounding-noise gradients, which Adam
            # turns into steps of up to lr in either direction
            assert (fast_state[name] - ref).abs().max() <= 2e-3, name
        elif ref.dtype == torch.int64:
            assert torch.equal(fast_state[name], ref), name
        else:  # Adam divides by the moments' root: float32 rounding of small gradients shows more
            assert rel_err(fast_state[name], ref) <= 1e-4, name
    _optimizer_states_equal(canonical_optimizer_state(stacked, opt), ref_opt.state_dict(), exact=False)
    with pytest.raises(ValueError, match='parameter'):  # other groups than the saved ones
        small = torch.optim.Adam(stacked[1].parameters())
        stacked_optimizer_state(stacked, small, ref_opt.state_dict())
    with pytest.raises(ValueError, match='parameters'):
        fewer = torch.optim.Adam([{'params': stacked[1].parameters()}, {'params': stacked[0].parameters()}])
        stacked_optimizer_state(stacked, fewer, ref_opt.state_dict())


def _optimizer_states_equal(ours, reference, exact):
    """Same groups, same parameter indices, same per-parameter state (exactly, or up to the
    float32 rounding that different summation orders give Adam's moments)."""
    assert ours['param_groups'] == reference['param_groups']
    assert sorted(ours['state']) == sorted(reference['state'])
    for index, ref in reference['state'].items():
        assert sorted(ours['state'][index]) == sorted(ref)
        for key, value in ref.items():
            mine = ours['state'][index][key]
            assert mine.shape == value.shape, (index, key)
            if exact or value.dim() == 0:
                assert torch.equal(mine, value), (index, key)
            else:  # rounding-noise gradients (biases before BatchNorm) differ at the 1e-9 level
                assert torch.allclose(mine, value, rtol=1e-3, atol=1e-7), (index, key)


def test_graph_block_initialisation_draws_like_per_vertex_linears():
    """Same seed, same weights as V ``nn.Linear`` layers built (and N(0, 0.01^2)-initialised)
    one after another, so seeded runs start from the same numbers as the original layout."""
    adj = torch.eye(15)
    torch.manual_seed(3)
    reference = PerVertexGraphConvBlock(adj, 6, 4)
    torch.manual_seed(3)
    block = GraphConvBlock(adj, 6, 4)
    _state_equal(block, reference, 0)
    torch.manual_seed(4)
    for fcbn in reference.fcbn_list:
        nn.init.normal_(fcbn[0].weight, std=0.01)
        nn.init.constant_(fcbn[0].bias, 0)
    torch.manual_seed(4)
    block.init_normal_linear(std=0.01)
    _state_equal(block, reference, 0)


def test_graph_conv_block_formula():
    """Train-mode block against an explicit formula: ReLU(A @ BN_v(W_v x_v + b_v))."""
    gen = torch.Generator().manual_seed(1)
    adj = random_adj(15, gen)
    block = GraphConvBlock(adj, 7, 5)
    _randomise_bn(block, gen)
    x = torch.randn(6, 15, 7, generator=gen, dtype=torch.float64)
    block.double()
    before = {k: v.clone() for k, v in block.state_dict().items()}
    out = block(x)
    after = block.state_dict()
    feats = []
    for v in range(15):
        p = f'fcbn_list.{v}.'
        h = x[:, v] @ before[p + '0.weight'].T + before[p + '0.bias']
        mean = h.mean(0)
        var = ((h - mean) ** 2).mean(0)
        feats.append((h - mean) / torch.sqrt(var + 1e-5) * before[p + '1.weight'] + before[p + '1.bias'])
        assert torch.allclose(after[p + '1.running_mean'], 0.9 * before[p + '1.running_mean'] + 0.1 * mean,
                              atol=1e-12)
        assert torch.allclose(after[p + '1.running_var'], 0.9 * before[p + '1.running_var'] + 0.1 * var * 6 / 5,
                              atol=1e-12)
        assert after[p + '1.num_batches_tracked'].item() == 1
    expected = torch.relu(torch.einsum('uv,bvc->buc', adj.double(), torch.stack(feats, 1)))
    assert torch.allclose(out, expected, rtol=1e-10, atol=1e-12)


def test_graph_block_state_dict_and_sync_bn():
    adj = torch.eye(15)
    block = GraphConvBlock(adj, 4, 3)
    state = block.state_dict()
    expected = [f'fcbn_list.{v}.{suffix}' for v in range(15)
                for suffix in ('0.weight', '0.bias', '1.weight', '1.bias', '1.running_mean', '1.running_var',
                               '1.num_batches_tracked')]
    assert list(state) == expected
    assert state['fcbn_list.2.0.weight'].shape == (3, 4) and state['fcbn_list.2.0.weight'].is_contiguous()
    assert torch.equal(state['fcbn_list.2.0.weight'], block.weight[2].t())
    # per-vertex keys missing for one vertex: strict loading names them
    del state['fcbn_list.7.0.bias']
    with pytest.raises(RuntimeError, match='fcbn_list'):
        GraphConvBlock(adj, 4, 3).load_state_dict(state)
    # SyncBatchNorm conversion reaches the stacked BatchNorm; the switch is harmless
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(GraphConvBlock(adj, 4, 3))
    assert type(converted.bn) is nn.SyncBatchNorm and converted.bn.num_features == 15 * 3
    assert list(converted.state_dict()) == expected


# ----------------------------------------------------------------------------- PositionNet
def _trilinear_by_hand(volume, x, y, z):
    """Explicit trilinear interpolation with zero padding; volume (D,H,W), coords as cell indices."""
    total = 0.0
    x0, y0, z0 = int(np.floor(x)), int(np.floor(y)), int(np.floor(z))
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                xi, yi, zi = x0 + dx, y0 + dy, z0 + dz
                w = (1 - abs(x - xi)) * (1 - abs(y - yi)) * (1 - abs(z - zi))
                if 0 <= xi < volume.shape[2] and 0 <= yi < volume.shape[1] and 0 <= zi < volume.shape[0]:
                    total += w * float(volume[zi, yi, xi])
    return total


def test_position_net_against_per_joint_loop():
    torch.manual_seed(0)
    net = PositionNet(joint_num=30, feat_dim=32, hm_shape=(8, 8, 8))
    with torch.no_grad():
        net.conv[0].weight.mul_(30)
    feat = torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        coord, score = net(feat)
        logits = net.conv(feat).view(2, 30, 8, 8, 8)  # channel 8*j + z
    assert coord.shape == (2, 30, 3) and score.shape == (2, 30, 1)
    prob = torch.softmax(logits.view(2, 30, -1), dim=2).view(2, 30, 8, 8, 8).double()
    zz, yy, xx = torch.meshgrid(*(torch.arange(8, dtype=torch.float64),) * 3, indexing='ij')
    for b in range(2):
        for j in range(30):
            p = prob[b, j]
            expected = torch.stack([(p * xx).sum(), (p * yy).sum(), (p * zz).sum()])
            assert torch.allclose(coord[b, j].double(), expected, rtol=1e-5, atol=1e-6)
            # spec's per-joint grid_sample and an explicit trilinear weight sum
            grid = (coord[b, j] / 7 * 2 - 1).view(1, 1, 1, 1, 3)
            loop = F.grid_sample(prob[b, j][None, None].float(), grid, align_corners=True).item()
            by_hand = _trilinear_by_hand(p, *coord[b, j].tolist())
            assert score[b, j, 0].item() == pytest.approx(loop, rel=1e-5, abs=1e-9)
            assert score[b, j, 0].item() == pytest.approx(by_hand, rel=1e-5, abs=1e-9)


def test_soft_argmax_of_peaked_volume():
    prob = torch.zeros(1, 2, 8, 8, 8)
    prob[0, 0, 5, 2, 7] = 1  # z=5, y=2, x=7
    prob[0, 1, 1, 3, 0] = 0.5
    prob[0, 1, 1, 3, 2] = 0.5
    coord = soft_argmax_3d(prob)
    assert torch.equal(coord[0, 0], torch.tensor([7.0, 2.0, 5.0]))
    assert torch.equal(coord[0, 1], torch.tensor([1.0, 3.0, 1.0]))
    score = sample_volumes_at(prob, coord)
    assert score[0, 0, 0].item() == pytest.approx(1.0)
    assert score[0, 1, 0].item() == pytest.approx(0.0, abs=1e-7)  # midpoint between the two peaks


def test_joint_feature_sampling_against_loop_and_hand_bilinear():
    gen = torch.Generator().manual_seed(3)
    feat = torch.randn(2, 16, 8, 8, generator=gen)
    coord = torch.rand(2, 30, 3, generator=gen) * 8.6 - 0.3  # includes points just outside the grid
    sampled = sample_joint_features(feat, coord)
    assert sampled.shape == (2, 30, 16)
    for b in range(2):
        for j in range(30):
            grid = (coord[b, j, :2] / 7 * 2 - 1).view(1, 1, 1, 2)
            loop = F.grid_sample(feat[b:b + 1], grid, align_corners=True)[0, :, 0, 0]
            assert rel_err(sampled[b, j], loop) < 1e-5
            x, y = coord[b, j, 0].item(), coord[b, j, 1].item()
            expected = torch.zeros(16, dtype=torch.float64)
            for yi in (int(np.floor(y)), int(np.floor(y)) + 1):
                for xi in (int(np.floor(x)), int(np.floor(x)) + 1):
                    if 0 <= xi < 8 and 0 <= yi < 8:
                        expected += (1 - abs(x - xi)) * (1 - abs(y - yi)) * feat[b, :, yi, xi].double()
            assert torch.allclose(sampled[b, j].double(), expected, rtol=1e-5, atol=1e-5)


def test_pose2feat_concatenates_image_first():
    net = Pose2Feat(30)
    assert net.conv[0].in_channels == 94 and net.conv[0].out_channels == 64
    img_feat, hm = torch.randn(2, 64, 8, 8), torch.randn(2, 30, 8, 8)
    net.eval()
    expected = net.conv(torch.cat([img_feat, hm], 1))
    assert torch.equal(net(img_feat, hm), expected)


# ----------------------------------------------------------------------------- RotationNet
def _descendants(joint):
    out = {joint}
    for j in range(1, 24):
        if SMPL_PARENTS[j] in out:
            out.add(j)
    return out


@pytest.fixture(scope='module')
def small_rotation_net():
    torch.manual_seed(0)
    net = RotationNet(random_adj(15, torch.Generator().manual_seed(0)), GRAPH_JOINT_IDX, SMPL_PARENTS,
                      feat_dim=24, graph_dim=8)
    return net.eval()


def test_rotation_net_shapes_and_branch_locality(small_rotation_net):
    net = small_rotation_net
    gen = torch.Generator().manual_seed(5)
    feat = torch.randn(2, 24, 8, 8, generator=gen)
    coord = torch.rand(2, 30, 3, generator=gen) * 7
    score = torch.rand(2, 30, 1, generator=gen)
    with torch.no_grad():
        pose6d, shape, cam = net(feat, coord, score)
    assert pose6d.shape == (2, 144) and shape.shape == (2, 10) and cam.shape == (2, 3)
    base = pose6d.view(2, 24, 6)
    bias3 = net.pose_branch.bias3
    for branch in (0, 2, 8, 12, 17, 22):  # branch k decodes joint k+1
        row = net.pose_branch.joint_order.index(branch + 1)
        with torch.no_grad():
            original = bias3[row].clone()
            bias3[row] += 0.5  # shifts the branch's output
            try:
                changed = net(feat, coord, score)[0].view(2, 24, 6)
            finally:
                bias3[row] = original
        moved = {j for j in range(24) if not torch.equal(changed[:, j], base[:, j])}
        assert moved == _descendants(branch + 1), branch


def test_rotation_net_gradient_flows_through_parent_chain(small_rotation_net):
    net = small_rotation_net
    gen = torch.Generator().manual_seed(6)
    feat = torch.randn(2, 24, 8, 8, generator=gen)
    coord = torch.rand(2, 30, 3, generator=gen) * 7
    score = torch.rand(2, 30, 1, generator=gen)
    net.zero_grad()
    pose6d, _, _ = net(feat, coord, score)
    pose6d.view(2, 24, 6)[:, 23].sum().backward()  # R_Hand: 23 <- 21 <- 19 <- 17 <- 14 <- 9 <- 6 <- 3 <- 0
    assert net.global_rot[0].weight.grad.abs().sum() > 0
    grads = dict(net.pose_branch.canonical_items(
        {name: p.grad for name, p in net.pose_branch.named_parameters()}))
    for joint in (3, 6, 9, 14, 17, 19, 21, 23):
        assert grads[f'{joint - 1}.0.weight'].abs().sum() > 0, joint
    for joint in (1, 2, 4, 13, 16, 22):
        assert grads[f'{joint - 1}.0.weight'].abs().sum() == 0, joint
    net.zero_grad()


def test_rotation_net_uses_feature_at_joint_and_parent_residual():
    """pose6d_j - pose6d_parent equals branch_j([g, F(j), pose6d_parent]) computed by hand."""
    torch.manual_seed(1)
    net = RotationNet(random_adj(15, torch.Generator().manual_seed(2)), GRAPH_JOINT_IDX, SMPL_PARENTS,
                      feat_dim=24, graph_dim=8).eval()
    feat = torch.randn(2, 24, 8, 8)
    coord = torch.rand(2, 30, 3) * 7
    score = torch.rand(2, 30, 1)
    with torch.no_grad():
        pose6d = net(feat, coord, score)[0].view(2, 24, 6)
        joint_feat = sample_joint_features(feat, coord)
        g_in = torch.cat([joint_feat[:, GRAPH_JOINT_IDX], coord[:, GRAPH_JOINT_IDX],
                          score[:, GRAPH_JOINT_IDX]], 2)
        g = net.graph_block(g_in).reshape(2, -1)
        assert torch.allclose(pose6d[:, 0], net.global_rot(g), atol=1e-6)
        branches = per_joint_branches(net.pose_branch)
        for j in (1, 5, 12, 23):
            p = SMPL_PARENTS[j]
            branch = branches[j - 1](torch.cat([g, joint_feat[:, j], pose6d[:, p]], 1))
            assert torch.allclose(pose6d[:, j], branch + pose6d[:, p], atol=1e-6)


def test_joint_feature_sampling_matches_grid_sample_on_a_non_square_map_with_gradients():
    """Height and width differ, points fall on cell borders and outside; the feature map's
    gradient equals grid_sample's."""
    gen = torch.Generator().manual_seed(5)
    feat = torch.randn(3, 5, 6, 9, dtype=torch.float64, generator=gen)
    coord = torch.rand(3, 7, 2, generator=gen, dtype=torch.float64) * torch.tensor([9.4, 6.4]) - 0.2
    coord[0, :3] = torch.tensor([[0.0, 0.0], [8.0, 5.0], [3.0, 2.5]], dtype=torch.float64)
    grid = torch.stack((coord[..., 0] / 8 * 2 - 1, coord[..., 1] / 5 * 2 - 1), -1)[:, None]
    ours_in, ref_in = feat.clone().requires_grad_(), feat.clone().requires_grad_()
    ours = sample_joint_features(ours_in, coord)
    ref = F.grid_sample(ref_in, grid, align_corners=True)[:, :, 0].transpose(1, 2)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    upstream = torch.randn(ours.shape, dtype=torch.float64, generator=gen)
    ours.backward(upstream)
    ref.backward(upstream)
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=0, atol=1e-12)
