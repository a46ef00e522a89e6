"""RotationNet's stacked pose branches against a plain per-joint loop written here.

The loop below is the method as stated: root 6D from the graph feature, then every joint's
branch module on [graph feature, joint's image feature, parent's 6D] plus the parent's 6D,
parents first. The branches are 23 separate ``nn.Sequential`` modules holding copies of the
stacked values (``tests.helpers.per_joint_branches``); the library decodes one tree depth at
a time with the stacked parameters. Both must give the same outputs and the same gradients
for every parameter and input.
"""
from pathlib import Path

import pytest
import torch
from torch import nn

from common.nets.layer import make_linear_layers
from common.nets.module import RotationNet, sample_joint_features
from common.nets.pose_branches import PoseBranches
from main.model import init_weights
from tests.helpers import per_joint_branches

SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
GRAPH_JOINT_IDX = [0, 1, 2, 4, 5, 7, 8, 12, 29, 16, 17, 18, 19, 20, 21]
# a 24-joint tree whose parents do not all come before their children in index order
SHUFFLED_PARENTS = [-1, 5, 0, 1, 0, 0, 2, 20, 4, 8, 9, 3, 3, 6, 13, 14, 4, 16, 16, 18, 12, 7, 11, 17]
KEY_FILE = Path(__file__).parent / 'data' / 'state_dict_keys.txt'
LAYER_SUFFIXES = ('0.weight', '0.bias', '2.weight', '2.bias', '4.weight', '4.bias')


def per_joint_reference(net, branches, graph_feat, joint_feat, parents):
    """Global 6D (B, 24*6): one branch module call per joint, each parent decoded first."""
    rot6d = {0: net.global_rot(graph_feat)}

    def decode(joint):
        if joint not in rot6d:
            parent6d = decode(parents[joint])
            branch_in = torch.cat((graph_feat, joint_feat[:, joint], parent6d), dim=1)
            rot6d[joint] = branches[joint - 1](branch_in) + parent6d
        return rot6d[joint]

    return torch.cat([decode(j) for j in range(len(parents))], dim=1)


def make_net(feat_dim=24, graph_dim=8, dtype=torch.float32, seed=0, parents=SMPL_PARENTS):
    torch.manual_seed(seed)
    adj = torch.rand(15, 15, generator=torch.Generator().manual_seed(seed))
    net = RotationNet((adj + adj.T) / 15, GRAPH_JOINT_IDX, parents, feat_dim=feat_dim,
                      graph_dim=graph_dim)
    with torch.no_grad():  # larger than the default init, so every branch matters
        for name, param in net.pose_branch.named_parameters():
            if 'bias' in name:
                param.uniform_(-0.5, 0.5)
            else:
                param.mul_(3.0)
    return net.to(dtype)


def decoder_inputs(net, batch=3, dtype=torch.float32, seed=1):
    gen = torch.Generator().manual_seed(seed)
    graph_dim = net.pose_branch.hidden_dim
    feat_dim = net.pose_branch.steady_dim - 15 * graph_dim
    graph_feat = torch.randn(batch, 15 * graph_dim, generator=gen, dtype=dtype).requires_grad_()
    joint_feat = torch.randn(batch, 30, feat_dim, generator=gen, dtype=dtype).requires_grad_()
    return graph_feat, joint_feat


def outputs_and_gradients(module, decode, graph_feat, joint_feat):
    """Decoded 6D and the gradients of a fixed random projection of it w.r.t. every parameter
    of ``module`` and both inputs."""
    module.zero_grad(set_to_none=True)
    graph_feat.grad = joint_feat.grad = None
    out = decode(graph_feat, joint_feat)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype)
    (out * weight).sum().backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}
    grads['graph_feat'] = graph_feat.grad.clone()
    grads['joint_feat'] = joint_feat.grad.clone()
    return out.detach(), grads


def relative_error(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def assert_same_decoding(net, parents, tol, dtype):
    """Fast path == per-joint loop: outputs, the gradients of the root head and of both inputs,
    and every branch parameter's gradient (the stacked gradients read per joint)."""
    graph_feat, joint_feat = decoder_inputs(net, dtype=dtype)
    fast_out, fast_grads = outputs_and_gradients(
        net, lambda g, f: net.decode_global_6d(g, f, parents), graph_feat, joint_feat)
    branches = per_joint_branches(net.pose_branch)
    holder = nn.ModuleDict({'global_rot': net.global_rot, 'pose_branch': branches})
    ref_out, ref_grads = outputs_and_gradients(
        holder, lambda g, f: per_joint_reference(net, branches, g, f, parents), graph_feat, joint_feat)
    assert relative_error(fast_out, ref_out) < tol
    stacked = {name[len('pose_branch.'):]: grad for name, grad in fast_grads.items()
               if name.startswith('pose_branch.')}
    assert len(stacked) == 8
    fast_branch = dict(net.pose_branch.canonical_items(stacked))
    ref_branch = {name[len('pose_branch.'):]: grad for name, grad in ref_grads.items()
                  if name.startswith('pose_branch.')}
    assert list(fast_branch) == list(ref_branch) and len(ref_branch) == 23 * 6
    for name, ref in ref_branch.items():
        assert relative_error(fast_branch[name], ref) < tol, name
    for name in ('global_rot.0.weight', 'global_rot.0.bias', 'graph_feat', 'joint_feat'):
        assert relative_error(fast_grads[name], ref_grads[name]) < tol, name


# ----------------------------------------------------------------------------- storage order
def test_storage_is_in_depth_order_of_the_tree():
    branches = PoseBranches(SMPL_PARENTS, 4, 6, 4)
    assert branches.joint_order == tuple(range(1, 24))  # SMPL's index order is a depth order
    shuffled = PoseBranches(SHUFFLED_PARENTS, 4, 6, 4)
    depth = {0: 0}
    for j in shuffled.joint_order:  # every parent is stored before its children
        depth[j] = depth[SHUFFLED_PARENTS[j]] + 1
    assert sorted(shuffled.joint_order) == list(range(1, 24))
    assert [depth[j] for j in shuffled.joint_order] == sorted(depth.values())[1:]
    with pytest.raises(ValueError):
        PoseBranches([-1, 2, 1], 4, 6, 4)  # cycle
    with pytest.raises(ValueError):
        PoseBranches([-1, 0, 7], 4, 6, 4)  # parent outside the tree


# ----------------------------------------------------------------------------- equality
@pytest.mark.parametrize('parents', [SMPL_PARENTS, SHUFFLED_PARENTS], ids=['smpl', 'unordered'])
@pytest.mark.parametrize('built_for', ['smpl', 'same'])
def test_by_depth_equals_per_joint_float64(parents, built_for):
    """Built for the decoded tree (rows are depth slices) or for SMPL's (rows gathered)."""
    net = make_net(dtype=torch.float64, parents=SMPL_PARENTS if built_for == 'smpl' else parents)
    assert_same_decoding(net, parents, 1e-12, torch.float64)


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
        joint_feat = sample_joint_features(feat, coord)
        graph_feat = net.graph_feature(joint_feat, coord, score)
        expected = per_joint_reference(net, per_joint_branches(net.pose_branch), graph_feat,
                                       joint_feat, SMPL_PARENTS)
    assert relative_error(pose6d, expected) < 1e-6
    assert torch.equal(shape, net.shape_out(graph_feat)) and torch.equal(cam, net.cam_out(graph_feat))


def test_bias_edit_moves_only_the_joint_and_its_descendants():
    net = make_net(dtype=torch.float64).eval()
    graph_feat, joint_feat = decoder_inputs(net, dtype=torch.float64)
    with torch.no_grad():
        base = net.decode_global_6d(graph_feat, joint_feat, SMPL_PARENTS).view(-1, 24, 6)
        net.pose_branch.bias3[net.pose_branch.joint_order.index(13)].add_(0.5)
        moved = net.decode_global_6d(graph_feat, joint_feat, SMPL_PARENTS).view(-1, 24, 6)
    changed = {j for j in range(24) if not torch.equal(base[:, j], moved[:, j])}
    assert changed == {13, 16, 18, 20, 22}


# ----------------------------------------------------------------------------- initialisation
@pytest.mark.parametrize('parents', [SMPL_PARENTS, SHUFFLED_PARENTS], ids=['smpl', 'unordered'])
def test_initialisation_draws_like_separate_branches(parents):
    """Default and ``init_weights`` initialisation equal those of 23 separately built branches
    (same seed, joint index order), and leave the random stream at the same point."""
    dims = [40 + 6, 8, 8, 6]
    torch.manual_seed(11)
    reference = nn.ModuleList(make_linear_layers(dims) for _ in range(23))
    after_default = torch.rand(3)
    reference.apply(init_weights)
    after_normal = torch.rand(3)
    torch.manual_seed(11)
    stacked = PoseBranches(parents, 16, 24, 8)
    default = stacked.canonical_items(dict(stacked.named_parameters()))
    assert torch.equal(torch.rand(3), after_default)
    stacked.apply(init_weights)
    normal = stacked.canonical_items(dict(stacked.named_parameters()))
    assert torch.equal(torch.rand(3), after_normal)
    torch.manual_seed(11)
    fresh = nn.ModuleList(make_linear_layers(dims) for _ in range(23))
    for items, ref in ((default, fresh), (normal, reference)):
        assert [name for name, _ in items] == [name for name, _ in ref.named_parameters()]
        assert all(torch.equal(value, param) for (_, value), param in zip(items, ref.parameters()))


# ----------------------------------------------------------------------------- layouts
def test_canonical_and_stacked_items_round_trip():
    net = make_net(parents=SHUFFLED_PARENTS)
    branches = net.pose_branch
    params = dict(branches.named_parameters())
    canonical = branches.canonical_items(params)
    expected = per_joint_branches(branches)
    assert [name for name, _ in canonical] == [name for name, _ in expected.named_parameters()]
    assert [name for name, _ in canonical] == [f'{j}.{s}' for j in range(23) for s in LAYER_SUFFIXES]
    assert all(torch.equal(value, param) for (_, value), param in zip(canonical, expected.parameters()))
    back = branches.stacked_items(dict(canonical))
    assert list(back) == list(params)
    assert all(torch.equal(back[name], params[name]) for name in params)
    # optimizer states are converted the same way, and the copies share no memory
    moments = {name: torch.randn_like(p) for name, p in params.items()}
    converted = dict(branches.canonical_items(moments))
    converted['5.2.weight'].zero_()
    assert all(torch.equal(v, moments[k]) for k, v in branches.stacked_items(converted).items()
               if k != 'weight2')
    assert not torch.equal(branches.stacked_items(converted)['weight2'], moments['weight2'])
    with pytest.raises(ValueError):
        branches.stacked_items({**dict(canonical), '3.4.bias': torch.zeros(7)})


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
    assert len(list(net.pose_branch.parameters())) == 8
    full = list(net.state_dict())  # the branch entries sit where the module's parameters were
    assert full[-len(expected):] == list(expected)


def test_strict_load_update_and_dtype_move():
    net = make_net(dtype=torch.float64)
    other = make_net(dtype=torch.float64, seed=5)
    result = net.load_state_dict(other.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), other.parameters()))
    # a per-joint checkpoint missing one entry or with an extra one is reported as usual
    state = other.state_dict()
    del state['pose_branch.9.2.bias']
    state['pose_branch.23.0.bias'] = torch.zeros(8, dtype=torch.float64)
    result = net.load_state_dict(state, strict=False)
    assert result.missing_keys == ['pose_branch.bias2']
    assert sorted(result.unexpected_keys) == sorted(
        ['pose_branch.23.0.bias'] + [f'pose_branch.{j}.2.bias' for j in range(23) if j != 9])
    with pytest.raises(RuntimeError):
        net.load_state_dict(state, strict=True)
    bad = other.state_dict()
    bad['pose_branch.4.0.weight'] = bad['pose_branch.4.0.weight'][:, 1:]
    with pytest.raises(RuntimeError, match='4.0.weight'):
        net.load_state_dict(bad, strict=True)

    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)
    graph_feat, joint_feat = decoder_inputs(net, dtype=torch.float64)
    net.decode_global_6d(graph_feat, joint_feat, SMPL_PARENTS).tanh().sum().backward()
    before = net.state_dict()['pose_branch.7.2.weight']
    optimizer.step()
    assert not torch.equal(before, net.state_dict()['pose_branch.7.2.weight'])
    assert_same_decoding(net, SMPL_PARENTS, 1e-12, torch.float64)  # sees the updated values

    params = list(net.parameters())
    net.float()
    assert [id(p) for p in net.parameters()] == [id(p) for p in params]
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert_same_decoding(net, SMPL_PARENTS, 1e-5, torch.float32)


# ----------------------------------------------------------------------------- precision
def _autocast_errors(net, device, dtype, parents=SMPL_PARENTS):
    """Relative error of both decoders under autocast against the float32 result."""
    graph_feat, joint_feat = decoder_inputs(net, batch=4)
    graph_feat, joint_feat = graph_feat.detach().to(device), joint_feat.detach().to(device)
    branches = per_joint_branches(net.pose_branch)
    with torch.no_grad():
        exact = per_joint_reference(net, branches, graph_feat, joint_feat, parents)
        with torch.autocast(device_type=device.type, dtype=dtype):
            fast = net.decode_global_6d(graph_feat, joint_feat, parents)
            loop = per_joint_reference(net, branches, graph_feat, joint_feat, parents)
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
def test_benchmark_floor_runs_only_the_rotation_nets_products_with_its_flops():
    """The floor measurement launches matrix products only, and as many multiply-adds as a
    hand count of the rotation net's training step (forward, weight and needed input gradients)."""
    from torch.utils.flop_counter import FlopCounterMode
    from tool.benchmark import RotationNetGemmFloor, count_operators
    net = make_net()  # 15 vertices, graph width 8, feature 24, 23 joints, hidden 8
    batch, v, c, cin, f, n, h = 3, 15, 8, 24 + 4, 24, 23, 8
    floor = RotationNetGemmFloor(net, batch, torch.device('cpu'))
    counter = FlopCounterMode(display=False)
    with counter:
        floor()
    macs = (2 * v * batch * cin * c  # first graph layer: forward, weight gradient
            + 8 * 3 * v * batch * c * c  # 8 residual graph layers: forward, weight, input gradient
            + 18 * v * v * batch * c  # adjacency mixing, forward and backward of 9 layers
            + 3 * batch * v * c * 19  # shape, camera, root heads
            + 3 * batch * v * c * n * h + 2 * batch * f * n * h  # pose layer 1 (graph, features)
            + 3 * n * batch * h * h + 3 * n * batch * h * 12)  # layers 2, 3 and the parent block
    assert counter.get_total_flops() == 2 * macs
    # one call per product: 2 + 24 + 18 (graph) + 3 (heads) + 5 + 6 (pose branches)
    assert count_operators(floor)['compute_ops'] == 58


# ----------------------------------------------------------------------------- optimizer state
def test_per_joint_optimizer_state_round_trip_and_resume():
    """Adam state of 23 per-joint branches, converted to the stacked parameters: written back it
    is the same state, and the next step equals the per-joint run's next step."""
    from common.nets.stacked import canonical_optimizer_state, stacked_optimizer_state
    net = make_net(dtype=torch.float64, parents=SHUFFLED_PARENTS)
    stacked = nn.ModuleDict({'global_rot': net.global_rot, 'pose_branch': net.pose_branch})
    reference = nn.ModuleDict({'global_rot': nn.Sequential(nn.Linear(120, 6)).double(),
                               'pose_branch': per_joint_branches(net.pose_branch)})
    reference['global_rot'].load_state_dict(net.global_rot.state_dict())
    ref_opt = torch.optim.Adam(reference.parameters(), lr=1e-3)
    inputs = [decoder_inputs(net, dtype=torch.float64, seed=s) for s in (1, 2, 3)]

    def ref_step(graph_feat, joint_feat):
        ref_opt.zero_grad()
        out = per_joint_reference(reference, reference['pose_branch'], graph_feat, joint_feat,
                                  SHUFFLED_PARENTS)
        out.tanh().sum().backward()
        ref_opt.step()

    for graph_feat, joint_feat in inputs[:2]:
        ref_step(graph_feat, joint_feat)
    stacked.load_state_dict(reference.state_dict(), strict=True)
    opt = torch.optim.Adam(stacked.parameters(), lr=1e-3)
    opt.load_state_dict(stacked_optimizer_state(stacked, opt, ref_opt.state_dict()))
    row = net.pose_branch.joint_order.index(6)
    assert torch.equal(opt.state[net.pose_branch.parent_weight]['exp_avg'][row],
                       ref_opt.state[reference['pose_branch'][5][0].weight]['exp_avg'][:, -6:])
    saved = canonical_optimizer_state(stacked, opt)
    expected = ref_opt.state_dict()
    assert saved['param_groups'] == expected['param_groups']
    assert saved['state'].keys() == expected['state'].keys()
    for index, state in expected['state'].items():
        assert all(torch.equal(saved['state'][index][k], v) for k, v in state.items()), index
    ref_step(*inputs[2])
    opt.zero_grad()
    net.decode_global_6d(*inputs[2], SHUFFLED_PARENTS).tanh().sum().backward()
    opt.step()
    ours, theirs = stacked.state_dict(), reference.state_dict()
    assert list(ours) == list(theirs)
    for name, ref in theirs.items():
        assert relative_error(ours[name], ref) < 1e-12, name
