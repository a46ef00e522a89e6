"""Checkpoint files: atomic save, strict/partial loads, the snapshot_0 conversion tool.

These use small stand-in modules with the real naming scheme (a ``human_model_layer``
with ``th_*`` buffers, BatchNorm statistics, ResNet key names); the drivers tests
exercise the same functions on the real model.
"""
import os

import pytest
import torch
from torch import nn

from common.utils import checkpoint as ckpt_io


class FakeBodyLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer('th_betas', torch.zeros(1, 10))
        self.register_buffer('th_faces', torch.arange(6, dtype=torch.int64).view(2, 3))


class TinyModel(nn.Module):
    """The four trained submodules of the real Model plus the SMPL layer's buffers."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.pose2feat = nn.Linear(4, 4)
        self.position_net = nn.Linear(4, 2)
        self.rotation_net = nn.Linear(2, 3)
        self.human_model_layer = FakeBodyLayer()


def randomised(model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=gen))
    return model


def released_state(model):
    """A released-format network dict: 'module.'-prefixed, SMPL buffers included."""
    return {'module.' + k: v.clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------ saving
def test_save_then_load_round_trip(tmp_path):
    model = randomised(TinyModel(), 0)
    state = {'epoch': 3, 'network': released_state(model), 'config': {'lr': 0.001, 'focal': [5000, 5000]}}
    path = ckpt_io.save_checkpoint(state, tmp_path / 'checkpoint' / 'snapshot_3.pth.tar')
    loaded = ckpt_io.load_checkpoint_file(path)
    assert loaded['epoch'] == 3
    assert loaded['config'] == {'lr': 0.001, 'focal': [5000, 5000]}
    for key, value in model.state_dict().items():
        assert torch.equal(loaded['network']['module.' + key], value)
    assert sorted(os.listdir(tmp_path / 'checkpoint')) == ['snapshot_3.pth.tar']


@pytest.mark.parametrize('interruption', [KeyboardInterrupt, OSError])
def test_interrupted_save_keeps_previous_file(tmp_path, monkeypatch, interruption):
    path = tmp_path / 'snapshot_1.pth.tar'
    good = {'epoch': 1, 'network': {'module.w': torch.arange(5.0)}}
    ckpt_io.save_checkpoint(good, path)
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        f.write(b'PK\x03\x04 half a zip file')  # some bytes reach the disk, then the process dies
        raise interruption('interrupted mid-write')

    monkeypatch.setattr(torch, 'save', dying_save)
    # an OSError reaches the user as a CheckpointError naming the file (a one-line CLI error)
    expected = ckpt_io.CheckpointWriteError if interruption is OSError else interruption
    with pytest.raises(expected):
        ckpt_io.save_checkpoint({'epoch': 2, 'network': {'module.w': torch.zeros(5)}}, path)
    monkeypatch.setattr(torch, 'save', real_save)
    loaded = ckpt_io.load_checkpoint_file(path)
    assert loaded['epoch'] == 1 and torch.equal(loaded['network']['module.w'], torch.arange(5.0))
    assert os.listdir(tmp_path) == ['snapshot_1.pth.tar']  # no temporary file left behind


def test_latest_snapshot_orders_by_epoch_number_and_ignores_temporaries(tmp_path):
    for name in ['snapshot_2.pth.tar', 'snapshot_10.pth.tar', 'snapshot_9.pth.tar',
                 '.snapshot_11.pth.tar.tmp-123', 'snapshot_12.pth.tar.bak', 'notes.txt']:
        (tmp_path / name).write_bytes(b'')
    assert [e for e, _ in ckpt_io.list_snapshots(tmp_path)] == [2, 9, 10]
    epoch, path = ckpt_io.latest_snapshot(tmp_path)
    assert epoch == 10 and path.endswith('snapshot_10.pth.tar')
    assert ckpt_io.latest_snapshot(tmp_path / 'absent') is None
    assert ckpt_io.snapshot_path('/a/b', 7) == os.path.join('/a/b', 'snapshot_7.pth.tar')


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(ckpt_io.CheckpointError, match='not found.*nothing.pth.tar'):
        ckpt_io.load_checkpoint_file(tmp_path / 'nothing.pth.tar')
    bad = tmp_path / 'bad.pth.tar'
    bad.write_bytes(b'not a checkpoint at all')
    with pytest.raises(ckpt_io.CheckpointError, match='bad.pth.tar'):
        ckpt_io.load_checkpoint_file(bad)


class _Arbitrary:
    pass


def test_pickled_python_objects_are_refused(tmp_path):
    path = tmp_path / 'snapshot_0.pth.tar'
    torch.save({'epoch': 0, 'network': {}, 'extra': _Arbitrary()}, path)
    with pytest.raises(ckpt_io.CheckpointError, match='weights_only'):
        ckpt_io.load_checkpoint_file(path)


def test_file_without_network_entry_is_named(tmp_path):
    with pytest.raises(ckpt_io.CheckpointError, match="no 'network'.*epoch"):
        ckpt_io.network_state_of({'epoch': 1}, 'x.pth.tar')


# ---------------------------------------------------------- strict loading
def test_released_format_loads_strictly_with_or_without_smpl_buffers():
    source = randomised(TinyModel(), 1)
    network = released_state(source)

    target = TinyModel()
    assert ckpt_io.load_network_strict(target, network) == []
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key

    # Without the body-model buffers: loads, and the local buffers stay.
    target = TinyModel()
    target.human_model_layer.th_betas.fill_(7.0)
    stripped = {k: v for k, v in network.items() if 'human_model_layer' not in k}
    absent = ckpt_io.load_network_strict(target, stripped)
    assert sorted(absent) == ['human_model_layer.th_betas', 'human_model_layer.th_faces']
    assert torch.all(target.human_model_layer.th_betas == 7.0)
    assert torch.equal(target.rotation_net.weight, source.rotation_net.weight)


def test_strict_load_names_missing_unexpected_and_misshaped_keys():
    network = released_state(TinyModel())
    network['module.rotation_net.weight'] = torch.zeros(5, 2)       # wrong shape
    del network['module.backbone.1.running_var']                      # a BN statistic missing
    network['module.rotation_net.extra'] = torch.zeros(1)             # not in the model
    with pytest.raises(ckpt_io.CheckpointMismatchError) as info:
        ckpt_io.load_network_strict(TinyModel(), network, source='snap.pth.tar')
    error = info.value
    message = str(error)
    assert 'snap.pth.tar' in message
    assert error.missing == ['backbone.1.running_var'] and 'backbone.1.running_var' in message
    assert error.unexpected == ['rotation_net.extra'] and 'rotation_net.extra' in message
    assert error.mismatched == [('rotation_net.weight', (5, 2), (3, 2))]
    assert 'rotation_net.weight: checkpoint (5, 2) vs model (3, 2)' in message


def test_unprefixed_keys_load_too():
    source = randomised(TinyModel(), 2)
    target = TinyModel()
    ckpt_io.load_network_strict(target, source.state_dict())
    assert torch.equal(target.pose2feat.weight, source.pose2feat.weight)


def test_smpl_buffer_pattern():
    assert ckpt_io.is_smpl_buffer('human_model_layer.th_posedirs')
    assert ckpt_io.is_smpl_buffer('module.human_model_layer.th_faces')
    assert not ckpt_io.is_smpl_buffer('rotation_net.human_model_layer_weight')
    assert not ckpt_io.is_smpl_buffer('backbone.bn1.running_mean')


def test_partial_load_reports_loaded_and_skipped_keys():
    source = randomised(TinyModel(), 3)
    network = {'module.backbone.0.weight': source.backbone[0].weight.clone(),
               'module.backbone.0.bias': torch.zeros(9),                 # wrong shape: skipped
               'module.final_layer.weight': torch.zeros(17, 256, 1, 1)}   # pose head: skipped
    target = TinyModel()
    before = target.backbone[0].bias.clone()
    report = ckpt_io.load_network_partial(target, network)
    assert report.loaded == ['backbone.0.weight']
    assert report.skipped_unexpected == ['final_layer.weight']
    assert len(report.skipped_shape) == 1 and report.skipped_shape[0].startswith('backbone.0.bias')
    assert 'backbone.0.bias' in report.not_in_file and 'rotation_net.weight' in report.not_in_file
    assert torch.equal(target.backbone[0].weight, source.backbone[0].weight)
    assert torch.equal(target.backbone[0].bias, before)
    text = report.summary('snapshot_0.pth.tar')
    assert '1 model entries loaded' in text and 'final_layer.weight' in text


def test_module_prefix_helpers():
    assert ckpt_io.add_module_prefix({'a.b': 1, 'module.c': 2}) == {'module.a.b': 1, 'module.c': 2}
    assert ckpt_io.strip_module_prefix({'module.a.b': 1, 'c': 2}) == {'a.b': 1, 'c': 2}


# ------------------------------------------------------- conversion tool
def fake_pose_resnet_state():
    """A SimpleBaseline pose_resnet_50 state dict: torchvision ResNet-50 names without fc,
    plus the deconvolution head."""
    import torchvision
    state = {k: v for k, v in torchvision.models.resnet50(weights=None).state_dict().items()
             if not k.startswith('fc.')}
    state['deconv_layers.0.weight'] = torch.randn(2048, 256, 4, 4)
    state['deconv_layers.1.running_mean'] = torch.zeros(256)
    state['final_layer.weight'] = torch.randn(17, 256, 1, 1)
    state['final_layer.bias'] = torch.randn(17)
    return state


@pytest.fixture(scope='module')
def pose_resnet_file(tmp_path_factory):
    state = fake_pose_resnet_state()
    path = tmp_path_factory.mktemp('simplebaseline') / 'pose_resnet_50_256x192.pth.tar'
    torch.save(state, path)
    return path, state


def test_convert_simple_to_i2l(pose_resnet_file, tmp_path):
    from tool.convert_simple_to_i2l import main
    src, state = pose_resnet_file
    out = main(['--src', str(src), '--out', str(tmp_path / 'snapshot_0.pth.tar')])
    converted = torch.load(out, map_location='cpu', weights_only=True)
    assert set(converted) == {'network', 'epoch'} and converted['epoch'] == 0
    network = converted['network']
    assert set(network) == {'module.backbone.' + k for k in state}
    assert len([k for k in network if k.startswith('module.backbone.layer')]) + \
        len([k for k in network if k.startswith(('module.backbone.conv1', 'module.backbone.bn1'))]) == 318
    for key, value in state.items():
        assert torch.equal(network['module.backbone.' + key], value)
        assert network['module.backbone.' + key].device.type == 'cpu'


def test_convert_accepts_prefixed_and_wrapped_files(tmp_path):
    from tool.convert_simple_to_i2l import convert
    state = {'module.conv1.weight': torch.ones(2), 'module.layer4.0.conv1.weight': torch.ones(3)}
    src = tmp_path / 'wrapped.pth.tar'
    torch.save({'state_dict': state}, src)
    network = torch.load(convert(str(src), str(tmp_path / 'out.pth.tar')), weights_only=True)['network']
    assert sorted(network) == ['module.backbone.conv1.weight', 'module.backbone.layer4.0.conv1.weight']


def test_convert_rejects_other_files(tmp_path):
    from tool.convert_simple_to_i2l import convert
    src = tmp_path / 'other.pth.tar'
    torch.save({'fc.weight': torch.ones(2)}, src)
    with pytest.raises(ckpt_io.CheckpointError, match="conv1.weight"):
        convert(str(src), str(tmp_path / 'out.pth.tar'))
    with pytest.raises(FileNotFoundError, match='pose_resnet_50_256x192'):
        convert(str(tmp_path / 'absent.pth.tar'), str(tmp_path / 'out.pth.tar'))


# ------------------------------------------------------- resume / warm start
def adam_after_one_step(model):
    """Adam over the model's parameters with one step taken (so it has state to restore)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    sum(p.sum() for p in model.parameters()).backward()
    optimizer.step()
    return optimizer


def test_resume_links_the_latest_snapshot_and_restores_model_and_optimizer(tmp_path):
    source = randomised(TinyModel(), 4)
    optimizer = adam_after_one_step(source)
    old_run = tmp_path / 'old'
    ckpt_io.save_checkpoint({'epoch': 1, 'network': {}}, ckpt_io.snapshot_path(old_run / 'checkpoint', 1))
    ckpt_io.save_checkpoint({'epoch': 3, 'network': released_state(source), 'optimizer': optimizer.state_dict(),
                             'scaler': {}, 'config': {'lr': 0.001}},
                            ckpt_io.snapshot_path(old_run / 'checkpoint', 3))
    new_dir = tmp_path / 'new' / 'checkpoint'
    new_dir.mkdir(parents=True)
    target = TinyModel()
    target_optimizer = torch.optim.Adam(target.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler('cpu', enabled=False)
    result = ckpt_io.resume_training(old_run, new_dir, target, target_optimizer, scaler)
    assert result.next_epoch == 4 and result.config == {'lr': 0.001} and result.had_optimizer
    assert result.path == str(new_dir / 'snapshot_3.pth.tar') and result.missing_smpl == []
    assert os.path.samefile(result.path, old_run / 'checkpoint' / 'snapshot_3.pth.tar')  # linked, not rewritten
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    restored, expected = target_optimizer.state_dict(), optimizer.state_dict()
    assert restored['param_groups'] == expected['param_groups']
    for index, state in expected['state'].items():
        for name, value in state.items():
            assert torch.equal(restored['state'][index][name], value), (index, name)


def test_resume_errors_name_the_folder_and_the_entry(tmp_path):
    model = TinyModel()
    optimizer = torch.optim.Adam(model.parameters())
    scaler = torch.amp.GradScaler('cpu', enabled=False)
    with pytest.raises(FileNotFoundError, match=r'--continue --exp_dir .*old: no snapshot_<epoch>\.pth\.tar'):
        ckpt_io.resume_training(tmp_path / 'old', tmp_path, model, optimizer, scaler)
    ckpt_io.save_checkpoint({'epoch': 'last', 'network': released_state(model)},
                            ckpt_io.snapshot_path(tmp_path / 'old' / 'checkpoint', 2))
    (tmp_path / 'new').mkdir()
    with pytest.raises(ckpt_io.CheckpointError, match="no integer 'epoch'"):
        ckpt_io.resume_training(tmp_path / 'old', tmp_path / 'new', model, optimizer, scaler)


def test_warm_start_loads_matching_entries_and_names_the_tool_when_absent(tmp_path):
    source = randomised(TinyModel(), 5)
    warm = ckpt_io.save_checkpoint({'epoch': 0, 'network': {'module.backbone.0.weight': source.backbone[0].weight,
                                                            'module.final_layer.bias': torch.zeros(17)}},
                                   tmp_path / 'tool' / 'snapshot_0.pth.tar')
    (tmp_path / 'run').mkdir()
    target = TinyModel()
    next_epoch, report, local = ckpt_io.warm_start(warm, tmp_path / 'run', target)
    assert next_epoch == 1 and local == str(tmp_path / 'run' / 'snapshot_0.pth.tar')
    assert report.loaded == ['backbone.0.weight'] and report.skipped_unexpected == ['final_layer.bias']
    assert torch.equal(target.backbone[0].weight, source.backbone[0].weight)
    with pytest.raises(FileNotFoundError, match=r'tool/snapshot_0\.pth\.tar.*tool/convert_simple_to_i2l\.py'):
        ckpt_io.warm_start(tmp_path / 'absent' / 'snapshot_0.pth.tar', tmp_path / 'run', target)
    with pytest.raises(ckpt_io.CheckpointError, match='No entry of'):
        ckpt_io.warm_start(ckpt_io.save_checkpoint({'network': {'module.x': torch.ones(1)}}, tmp_path / 'other.pth.tar'),
                           tmp_path / 'run', TinyModel())
