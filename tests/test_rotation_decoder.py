"""RotationNet's pose decoding by tree depth against a plain per-joint loop written here.

The loop below is the method as stated: root 6D from the graph feature, then every joint's
branch on [graph feature, joint's image feature, parent's 6D] plus the parent's 6D, parents
first.  The library decodes one tree depth at a time with stacked weights; both must give the
same outputs and the same gradients for every parameter and input.
"""
from pathlib import Path

import pytest
import torch
from torch import nn

from common.nets.module import RotationNet

SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
GRAPH_JOINT_IDX = [0, 1, 2, 4, 5, 7, 8, 12, 29, 16, 17, 18, 19, 20, 21]
# a 24-joint tree whose parents do not all come before their children in index order
SHUFFLED_PARENTS = [-1, 5, 0, 1, 0, 0, 2, 20, 4, 8, 9, 3, 3, 6, 13, 14, 4, 16, 16, 18, 12, 7, 11, 17]
KEY_FILE = Path(__file__).parent / 'data' / 'state_dict_keys.txt'


def per_joint_reference(net, graph_feat, joint_feat, parents):
    """Global 6D (B, 24*6): one branch module call per joint, each parent decoded first."""
    rot6d = {0: net.global_rot(graph_feat)}

    def decode(joint):
        if joint not in rot6d:
            parent6d = decode(parents[joint])
            branch_in = torch.cat((graph_feat, joint_feat[:, joint], parent6d), dim=1)
            rot6d[joint] = net.pose_branch[joint - 1](branch_in) + parent6d
        return rot6d[joint]

    return torch.cat([decode(j) for j in range(len(parents))], dim=1)


def make_net(feat_dim=24, graph_dim=8, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    adj = torch.rand(15, 15, generator=torch.Generator().manual_seed(seed))
    net = RotationNet((adj + adj.T) / 15, GRAPH_JOINT_IDX, SMPL_PARENTS, feat_dim=feat_dim,
                      graph_dim=graph_dim)
    with torch.no_grad():  # larger than the default init, so every branch matters
        for branch in net.pose_branch:
            for layer in (0, 2, 4):
                branch[layer].weight.mul_(3.0)
                branch[layer].bias.uniform_(-0.5, 0.5)
    return net.to(dtype)


def decoder_inputs(net, batch=3, dtype=torch.float32, seed=1):
    gen = torch.Generator().manual_seed(seed)
    graph_dim = net.pose_branch[0][0].out_features
    feat_dim = net.pose_branch[0][0].in_features - 15 * graph_dim - 6
    graph_feat = torch.randn(batch, 15 * graph_dim, generator=gen, dtype=dtype).requires_grad_()
    joint_feat = torch.randn(batch, 30, feat_dim, generator=gen, dtype=dtype).requires_grad_()
    return graph_feat, joint_feat


def outputs_and_gradients(net, decode, graph_feat, joint_feat, parents):
    """Decoded 6D and the gradients of a fixed random projection of it w.r.t. every parameter
    and both inputs."""
    net.zero_grad(set_to_none=True)
    graph_feat.grad = joint_feat.grad = None
    out = decode(graph_feat, joint_feat, parents)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype)
    (out * weight).sum().backward()
    grads = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
    grads['graph_feat'] = graph_feat.grad.clone()
    grads['joint_feat'] = joint_feat.grad.clone()
    return out.detach(), grads


def relative_error(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def assert_same_decoding(net, parents, tol, dtype):
    graph_feat, joint_feat = decoder_inputs(net, dtype=dtype)
    assert net.uses_depth_path()
    fast_out, fast_grads = outputs_and_gradients(net, net.decode_global_6d, graph_feat, joint_feat, parents)
    ref_out, ref_grads = outputs_and_gradients(
        net, lambda g, f, p: per_joint_reference(net, g, f, p), graph_feat, joint_feat, parents)
    assert relative_error(fast_out, ref_out) < tol
    assert fast_grads.keys() == ref_grads.keys()
    branch_grads = [k for k in ref_grads if k.startswith('pose_branch.')]
    assert len(branch_grads) == 23 * 6
    for name, ref in ref_grads.items():
        assert relative_error(fast_grads[name], ref) < tol, name


# ----------------------------------------------------------------------------- schedule
def test_depth_schedule_of_smpl_tree():
    plan = RotationNet.depth_schedule(SMPL_PARENTS)
    assert plan.order == tuple(range(1, 24))
    assert plan.sizes == (3, 3, 3, 5, 3, 2, 2, 2)
    assert plan.inverse == tuple(range(24))
    # each depth's parents, read through the positions, are the tree's parents
    previous = [0]
    start = 0
    for size, positions in zip(plan.sizes, plan.parent_pos):
        joints = plan.order[start:start + size]
        assert [previous[p] for p in positions] == [SMPL_PARENTS[j] for j in joints]
        previous, start = list(joints), start + size


def test_depth_schedule_of_unordered_tree_and_invalid_trees():
    plan = RotationNet.depth_schedule(SHUFFLED_PARENTS)
    decoded = [0] + list(plan.order)
    assert sorted(plan.order) == list(range(1, 24))
    assert [decoded[i] for i in plan.inverse] == list(range(24))
    depth = {0: 0}
    for j in plan.order:  # parents are decoded one depth earlier
        depth[j] = depth[SHUFFLED_PARENTS[j]] + 1
    assert [depth[j] for j in plan.order] == sorted(depth[j] for j in plan.order)
    with pytest.raises(ValueError):
        RotationNet.depth_schedule([-1, 2, 1])  # cycle
    with pytest.raises(ValueError):
        RotationNet.depth_schedule([-1, 0, 7])  # parent outside the tree


# ----------------------------------------------------------------------------- equality
@pytest.mark.parametrize('parents', [SMPL_PARENTS, SHUFFLED_PARENTS], ids=['smpl', 'unordered'])
def test_by_depth_equals_per_joint_float64(parents):
    assert_same_decoding(make_net(dtype=torch.float64), parents, 1e-12, torch.float64)


def test_by_depth_equals_per_joint_float32_full_size():
    """The released sizes (2048-d image feature, 128-d graph feature), train mode, float32."""
    net = make_net(feat_dim=2048, graph_dim=128).train()
    assert_same_decoding(net, SMPL_PARENTS, 1e-5, torch.float32)


def test_forward_equals_per_joint_reference_end_to_end():
    net = make_net().eval()
    gen = torch.Generator().manual_seed(3)
    feat = torch.randn(2, 24, 8, 8, generator=gen)
    coord = torch.rand(2, 30, 3, generator=gen) * 7
    score = torch.rand(2, 30, 1, generator=gen)
    with torch.no_grad():
        pose6d, shape, cam = net(feat, coord, score)
        from common.nets.module import sample_joint_features
        joint_feat = sample_joint_features(feat, coord)
        graph_feat = net.graph_feature(joint_feat, coord, score)
        expected = per_joint_reference(net, graph_feat, joint_feat, SMPL_PARENTS)
    assert relative_error(pose6d, expected) < 1e-6
    assert torch.equal(shape, net.shape_out(graph_feat)) and torch.equal(cam, net.cam_out(graph_feat))


# ----------------------------------------------------------------------------- parameters
def test_checkpoint_names_shapes_dtypes_unchanged():
    expected = {}
    for line in KEY_FILE.read_text().splitlines():
        name, shape = line.split()
        if name.startswith('module.rotation_net.pose_branch.'):
            expected[name[len('module.rotation_net.'):]] = tuple(int(s) for s in shape.split('x'))
    net = make_net(feat_dim=2048, graph_dim=128)
    state = {k: v for k, v in net.state_dict().items() if k.startswith('pose_branch.')}
    assert list(state) == list(expected)
    assert all(tuple(v.shape) == expected[k] and v.dtype == torch.float32 for k, v in state.items())
    assert len(list(net.pose_branch.parameters())) == 23 * 6


def test_packed_storage_survives_load_update_and_device_moves():
    """Loading, optimizer steps and dtype moves keep the depth path equal to the loop."""
    net = make_net(dtype=torch.float64)
    other = make_net(dtype=torch.float64, seed=5)
    net.load_state_dict(other.state_dict(), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), other.parameters()))
    groups, _ = net.branch_blocks(net.schedule(SMPL_PARENTS).order)
    assert all(net.packed_block(params) is not None for params in groups)  # stacking is a view

    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)
    graph_feat, joint_feat = decoder_inputs(net, dtype=torch.float64)
    net.decode_global_6d(graph_feat, joint_feat, SMPL_PARENTS).tanh().sum().backward()
    before = net.pose_branch[7][2].weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, net.pose_branch[7][2].weight)
    assert_same_decoding(net, SMPL_PARENTS, 1e-12, torch.float64)  # sees the updated values

    params = list(net.parameters())
    net.float()  # every parameter gets its own storage; the next call packs them again
    assert [id(p) for p in net.parameters()] == [id(p) for p in params]
    assert_same_decoding(net, SMPL_PARENTS, 1e-5, torch.float32)
    groups, _ = net.branch_blocks(net.schedule(SMPL_PARENTS).order)
    assert all(net.packed_block(params) is not None for params in groups)


def test_in_place_weight_edits_reach_the_depth_path():
    net = make_net(dtype=torch.float64).eval()
    graph_feat, joint_feat = decoder_inputs(net, dtype=torch.float64)
    with torch.no_grad():
        base = net.decode_global_6d(graph_feat, joint_feat, SMPL_PARENTS).view(-1, 24, 6)
        net.pose_branch[12][4].bias.add_(0.5)  # joint 13 and its descendants 16, 18, 20, 22
        moved = net.decode_global_6d(graph_feat, joint_feat, SMPL_PARENTS).view(-1, 24, 6)
    changed = {j for j in range(24) if not torch.equal(base[:, j], moved[:, j])}
    assert changed == {13, 16, 18, 20, 22}


def test_hooked_branches_are_called_and_custom_branches_use_the_loop():
    net = make_net(dtype=torch.float64)
    graph_feat, joint_feat = decoder_inputs(net, dtype=torch.float64)
    calls = []
    handle = net.pose_branch[3].register_forward_hook(lambda m, i, o: calls.append(1) or o + 0.25)
    try:
        assert net.uses_depth_path()
        assert_same_decoding(net, SMPL_PARENTS, 1e-12, torch.float64)  # the loop calls it too
        calls.clear()
        with torch.no_grad():
            hooked = net.decode_global_6d(graph_feat, joint_feat, SMPL_PARENTS)
        assert calls == [1]
    finally:
        handle.remove()
    with torch.no_grad():
        plain = net.decode_global_6d(graph_feat, joint_feat, SMPL_PARENTS)
    changed = {j for j in range(24) if not torch.equal(hooked.view(-1, 24, 6)[:, j],
                                                        plain.view(-1, 24, 6)[:, j])}
    assert changed == {4, 7, 10}  # joint 4 (branch 3) and its descendants
    net.pose_branch[0][1] = nn.LeakyReLU()
    assert not net.uses_depth_path()


# ----------------------------------------------------------------------------- precision
def _autocast_errors(net, device, dtype, parents=SMPL_PARENTS):
    """Relative error of both decoders under autocast against the float32 result."""
    graph_feat, joint_feat = decoder_inputs(net, batch=4)
    graph_feat, joint_feat = graph_feat.detach().to(device), joint_feat.detach().to(device)
    with torch.no_grad():
        exact = per_joint_reference(net, graph_feat, joint_feat, parents)
        with torch.autocast(device_type=device.type, dtype=dtype):
            fast = net.decode_global_6d(graph_feat, joint_feat, parents)
            loop = per_joint_reference(net, graph_feat, joint_feat, parents)
    assert fast.dtype == loop.dtype == dtype
    return relative_error(fast.float(), exact), relative_error(loop.float(), exact)


def test_cpu_bfloat16_autocast_matches_modules_precision():
    net = make_net(feat_dim=64, graph_dim=16)
    fast_err, loop_err = _autocast_errors(net, torch.device('cpu'), torch.bfloat16)
    assert fast_err < 2 * loop_err + 1e-3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_float16_autocast_matches_modules_precision():
    device = torch.device('cuda')
    net = make_net(feat_dim=2048, graph_dim=128).to(device)
    fast_err, loop_err = _autocast_errors(net, device, torch.float16)
    assert fast_err < 2 * loop_err + 1e-4
    # gradients reach the float32 parameters in float32
    graph_feat, joint_feat = (t.detach().to(device).requires_grad_() for t in decoder_inputs(net))
    with torch.autocast(device_type='cuda', dtype=torch.float16):
        out = net.decode_global_6d(graph_feat, joint_feat, SMPL_PARENTS)
    out.float().square().sum().backward()
    assert all(p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
               for p in net.pose_branch.parameters())


# ----------------------------------------------------------------------------- benchmark reference
def test_benchmark_reference_heads_match_and_launch_more_operators():
    """The benchmark's per-vertex, per-joint RotationNet loads this one's weights and agrees
    with it; the depth decoder launches fewer operators for the same training step."""
    from tool.benchmark import ReferenceRotationNet, count_operators
    net = make_net().train()
    adj = net.graph_block[0].adj
    reference = ReferenceRotationNet(adj, GRAPH_JOINT_IDX, SMPL_PARENTS, feat_dim=24, graph_dim=8).train()
    reference.load_state_dict(net.state_dict(), strict=True)
    gen = torch.Generator().manual_seed(4)
    feat = torch.randn(3, 24, 8, 8, generator=gen)
    coord = torch.rand(3, 30, 3, generator=gen) * 7
    score = torch.rand(3, 30, 1, generator=gen)
    for ours, theirs in zip(net(feat, coord, score), reference(feat, coord, score)):
        assert relative_error(ours.detach(), theirs.detach()) < 1e-5

    def step(module):
        module.zero_grad(set_to_none=True)
        sum(out.square().sum() for out in module(feat, coord, score)).backward()

    ours, theirs = count_operators(lambda: step(net)), count_operators(lambda: step(reference))
    assert 0 < ours['compute_ops'] <= ours['ops'] and ours['ops'] < theirs['ops']
