"""The benchmark's model mode. Its reference, ``tool/bench/original_heads.py`` (the original's
heads and SMPL run operation by operation): the pieces against independent references
(smplpytorch, scipy), the whole copy against the model, and the heads' operator-count target
measured against it; and the page-fault count of the timing loop."""
import copy
import mmap
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from common.options import BodyModelPaths, GeometryOptions, ModelOptions
from common.utils.smpl import SMPL
from main.model import get_model
from tool.bench.original_heads import (OriginalSMPLLayer, axis_angle_to_rotmat_masked, original_model,
                                       rotmat_to_axis_angle)
from tool.bench.timing import time_alternating
from tool.benchmark import StepFunctions, count_operators, random_batch

pytestmark = pytest.mark.usefixtures('cfg_state')

KEY_FILE = Path(__file__).parent / 'data' / 'state_dict_keys.txt'

# non-square crop and heatmap, so a height / width mix-up in the per-joint sampling shows
SMALL_GEOMETRY = GeometryOptions(input_img_shape=(128, 96), output_hm_shape=(32, 32, 24), bbox_3d_size=2,
                                 camera_3d_size=2.5, focal=(5000, 4000), sigma=2.5)


@pytest.fixture(scope='module')
def model(synthetic_smpl_dir):
    options = ModelOptions(geometry=SMALL_GEOMETRY, body_model=BodyModelPaths(synthetic_smpl_dir, synthetic_smpl_dir),
                           resnet_type=50, imagenet_weights=None)
    torch.manual_seed(0)
    model = get_model(6890, 30, 'train', SMPL(options.body_model), options)
    return model


def test_smpl_layer_matches_smplpytorch(synthetic_smpl_dir, model):
    ref_module = pytest.importorskip('smplpytorch.pytorch.smpl_layer')
    ref = ref_module.SMPL_Layer(center_idx=None, gender='neutral', model_root=str(synthetic_smpl_dir))
    layer = OriginalSMPLLayer(model.human_model_layer)
    gen = torch.Generator().manual_seed(1)
    pose, betas, trans = torch.randn(3, 72, generator=gen), torch.randn(3, 10, generator=gen), torch.randn(3, 3, generator=gen)
    for p, b, t in [(pose, betas, trans), (pose, torch.zeros_like(betas), torch.zeros_like(trans))]:
        for ours, theirs in zip(layer(p, b, t), ref(p, b, t)):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_matrix_to_axis_angle_matches_scipy():
    rotations = Rotation.random(200, random_state=3)
    # include the branches: near-identity, half turns about each axis, angles close to pi
    rotvecs = np.concatenate([rotations.as_rotvec(), [[1e-4, 0, 0], [np.pi, 0, 0], [0, np.pi, 0], [0, 0, np.pi],
                                                       [0, 3.1, 0.2]]])
    matrices = torch.tensor(Rotation.from_rotvec(rotvecs).as_matrix())
    ours = rotmat_to_axis_angle(matrices).numpy()
    # compare rotations, not vectors: a half turn has two equal axis-angle vectors
    angle = (Rotation.from_rotvec(ours) * Rotation.from_rotvec(rotvecs).inv()).magnitude()
    assert angle.max() < 1e-7


def test_axis_angle_to_matrix_matches_scipy_and_its_first_order_form():
    rotvecs = Rotation.random(100, random_state=4).as_rotvec()
    ours = axis_angle_to_rotmat_masked(torch.tensor(rotvecs))
    assert ours.shape == (100, 4, 4)
    # the axis is r / (theta + 1e-6), so entries are off by up to ~1e-6 / theta
    np.testing.assert_allclose(ours[:, :3, :3].numpy(), Rotation.from_rotvec(rotvecs).as_matrix(), atol=3e-6)
    np.testing.assert_array_equal(ours[:, 3].numpy(), np.tile([0, 0, 0, 1], (100, 1)))
    tiny = torch.tensor([[1e-4, -2e-4, 3e-4]], dtype=torch.float64)  # theta^2 below 1e-6: I + [r]x
    rx, ry, rz = tiny[0].tolist()
    expected = [[1, -rz, ry], [rz, 1, -rx], [-ry, rx, 1]]
    np.testing.assert_array_equal(axis_angle_to_rotmat_masked(tiny)[0, :3, :3].numpy(), expected)


def _heads_train(model, feat, batch):
    inputs, targets, meta_info = batch
    model.zero_grad(set_to_none=True)
    feat = feat.clone().requires_grad_()
    loss = model.heads(feat, inputs, targets, meta_info, 'train')
    sum(value.sum() for value in loss.values()).backward()
    return loss, feat.grad


def test_original_copy_equals_the_model_in_float64(model):
    """Losses, the feature's gradient and every head parameter's gradient (compared under the
    checkpoint names: the per-vertex / per-joint layers hold separate weights, the model stacked
    ones, and ``state_dict`` writes both in the released layout)."""
    model = copy.deepcopy(model).double().train()
    original = original_model(model).train()
    batch = [{k: v.double() for k, v in part.items()} for part in random_batch(4, torch.device('cpu'))]
    feat = torch.randn(4, 2048, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    (loss, grad), (ref_loss, ref_grad) = _heads_train(model, feat, batch), _heads_train(original, feat, batch)
    for key, value in ref_loss.items():
        torch.testing.assert_close(loss[key], value, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-10 * float(ref_grad.abs().max()))
    with torch.no_grad():
        for module in (model, original):
            for param in module.parameters():
                if param.grad is not None:
                    param.copy_(param.grad)
        ours, theirs = model.state_dict(), original.state_dict()
    heads = [k for k in theirs if k.startswith(('position_net.', 'rotation_net.'))
             and not k.endswith(('running_mean', 'running_var', 'num_batches_tracked'))]
    assert len(heads) > 600
    # one absolute tolerance for all: a Linear bias before BatchNorm has a zero gradient up to rounding
    scale = max(float(theirs[key].abs().max()) for key in heads)
    for key in heads:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-9, atol=1e-10 * scale,
                                   msg=lambda text, key=key: f'{key}: {text}')


def test_original_state_dict_has_the_released_layout_and_loads_into_the_model(model, synthetic_smpl_dir):
    """Keys (and shapes, except PositionNet's, which follow the small test geometry) as in the
    released checkpoints' key list; a differently initialised model loads the copy's state
    strictly and then holds its values."""
    theirs = original_model(model).state_dict()
    expected = [line.split() for line in KEY_FILE.read_text().splitlines()]
    assert list(theirs) == [name[len('module.'):] for name, _ in expected]
    for name, shape in expected:
        key = name[len('module.'):]
        if not key.startswith('position_net.'):
            want = () if shape == 'scalar' else tuple(int(s) for s in shape.split('x'))
            assert tuple(theirs[key].shape) == want, key
    options = ModelOptions(geometry=SMALL_GEOMETRY, body_model=BodyModelPaths(synthetic_smpl_dir, synthetic_smpl_dir),
                           resnet_type=50, imagenet_weights=None)
    torch.manual_seed(7)
    other = get_model(6890, 30, 'train', SMPL(options.body_model), options)
    other.load_state_dict(theirs, strict=True)
    for key, value in other.state_dict().items():
        assert torch.equal(value, theirs[key]), key


def test_heads_train_step_launches_at_most_a_third_of_the_originals_operators(synthetic_smpl_dir):
    """The operator count is the same on every device (on a GPU each is a kernel launch)."""
    geometry = GeometryOptions(input_img_shape=(256, 256), output_hm_shape=(64, 64, 64), bbox_3d_size=2,
                               camera_3d_size=2.5, focal=(5000, 5000), sigma=2.5)
    options = ModelOptions(geometry=geometry, body_model=BodyModelPaths(synthetic_smpl_dir, synthetic_smpl_dir),
                           resnet_type=50, imagenet_weights=None)
    torch.manual_seed(0)
    model = get_model(6890, 30, 'train', SMPL(options.body_model), options)
    batch = random_batch(2, torch.device('cpu'))
    amp = torch.autocast('cpu', enabled=False)
    ours = count_operators(StepFunctions(model, *batch, amp).heads_train_step)
    theirs = count_operators(StepFunctions(original_model(model), *batch, amp).heads_train_step)
    assert 3 * ours['ops'] <= theirs['ops'], (ours, theirs)


def _write_fresh_pages(size=16 * 2 ** 20, page=4096):
    """Map new anonymous memory and write one byte per page: one fault per page, whatever the
    process's malloc policy."""
    with mmap.mmap(-1, size) as memory:
        memory[::page] = b'\x01' * (size // page)


def test_timing_counts_the_page_faults_of_fresh_memory():
    stats = time_alternating({'fresh': _write_fresh_pages, 'idle': lambda: None},
                             runs=3, warmup=1, device=torch.device('cpu'))
    # 4096 pages of 4 KiB, or 8 huge pages where transparent huge pages are always on
    assert stats['fresh']['faults'] >= 8 and stats['fresh']['faults'] > stats['idle']['faults']
    assert set(stats['idle']) == {'median_ms', 'min_ms', 'max_ms', 'runs', 'faults'}
