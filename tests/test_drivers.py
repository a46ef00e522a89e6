"""Training/test drivers: CLI, device selection, timers, logger, optimizer and LR schedule,
non-finite losses, and (on the synthetic tree) training, resume, determinism and testing."""
import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from common.logger import ColorLogger
from common.timer import Timer
from common.utils import device as device_utils
from main.config import cfg
from tests.helpers import run_in_process

# These tests set options on the global ``cfg``; ``cfg_state`` restores it after each test.
pytestmark = pytest.mark.usefixtures('cfg_state')

LOG_LINE = re.compile(r'^\d\d-\d\d \d\d:\d\d:\d\d (.*)$')


# --------------------------------------------------------------------- CLI
def test_train_cli_flags():
    from main.train import parse_args
    args = parse_args(['--gpu', '0-3', '--amp', '--continue', '--init_scale', '256'])
    assert args.gpu_ids == '0,1,2,3'
    assert args.use_mixed_precision and args.continue_train
    assert args.init_scale == 256.0 and args.exp_dir == '' and args.cfg == ''
    args = parse_args(['--gpu', '0,2'])
    assert args.gpu_ids == '0,2' and not args.use_mixed_precision and not args.continue_train
    assert args.init_scale == 1024.0


@pytest.mark.parametrize('argv, message', [
    (['--gpu', '0-a'], "Invalid --gpu value '0-a'"),
    (['--gpu', '3-1'], 'below the start'),
    (['--gpu', '0', '--exp_dir', '/no/such/experiment'], '--exp_dir /no/such/experiment: no such folder'),
    (['--gpu', '0', '--cfg', '/no/such/file.yaml'], '--cfg /no/such/file.yaml: no such file'),
])
def test_train_cli_errors(argv, message, capsys):
    from main.train import parse_args
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_test_cli_flags(capsys):
    from main.test import parse_args
    args = parse_args(['--gpu', '1', '--test_epoch', '7', '--flip'])
    assert args.gpu_ids == '1' and args.test_epoch == 7 and args.flip and not args.save_meshes
    with pytest.raises(SystemExit):
        parse_args(['--gpu', '0'])
    assert 'required: --test_epoch' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(['--gpu', '0', '--test_epoch', 'last'])
    assert "invalid int value: 'last'" in capsys.readouterr().err


def test_gpu_is_optional():
    from main.demo import build_parser
    from main.test import parse_args as parse_test_args
    from main.train import parse_args
    assert parse_args([]).gpu_ids is None
    assert parse_test_args(['--test_epoch', '3']).gpu_ids is None
    assert build_parser().parse_args(['--img', 'a.jpg', '--pose', 'p.json', '--model', 'm.pth']).gpu_ids is None
    cfg.set_args(None)
    assert cfg.gpu_ids is None and cfg.num_gpus == 1
    cfg.validate()


# ------------------------------------------------------------------ device
def test_no_gpu_ids_means_the_first_cuda_device_else_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    setup = device_utils.select_device(None)
    assert setup.device == torch.device('cpu') and setup.device_ids == [] and not setup.warnings
    assert setup.notes == ['device: cpu (no CUDA device)']
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    setup = device_utils.select_device(None)
    assert setup.device == torch.device('cuda', 0) and setup.device_ids == [0] and not setup.warnings
    assert len(setup.notes) == 1 and 'first CUDA device' in setup.notes[0]


def test_the_default_device_is_said_once_in_the_log(tmp_path, cfg_state):
    from common.trainer import Trainer
    cfg.set_args(None)
    cfg.output_root = str(tmp_path)
    cfg.make_run_dirs()
    trainer = Trainer()
    trainer.close()
    messages = log_messages(trainer.logger.path)
    device_lines = [m for m in messages if m.startswith(('device:', '--gpu', '>>> Using GPU', 'CUDA', 'WRN: CUDA'))]
    if torch.cuda.is_available():
        assert device_lines == ['--gpu not given: using the first CUDA device (--gpu chooses others).',
                                '>>> Using GPU: 0']
    else:
        assert device_lines == ['device: cpu (no CUDA device)']


def test_cpu_fallback_and_amp(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    setup = device_utils.select_device('0-1')
    assert setup.device.type == 'cpu' and setup.device_ids == [] and setup.num_devices == 1
    assert len(setup.warnings) == 1 and 'CPU' in setup.warnings[0]
    assert device_utils.resolve_amp(False, setup.device) == (False, None)
    enabled, warning = device_utils.resolve_amp(True, setup.device)
    assert not enabled and '--amp is ignored' in warning
    with pytest.raises(ValueError, match="Invalid --gpu value"):
        device_utils.select_device('zero')


def test_cuda_ids_are_checked(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    setup = device_utils.select_device('1')
    assert setup.device == torch.device('cuda', 1) and setup.device_ids == [1] and not setup.warnings
    assert device_utils.select_device('0-1').device_ids == [0, 1]
    with pytest.raises(ValueError, match='no CUDA device with id 2, 3.*2 device'):
        device_utils.select_device('0-3')
    assert device_utils.resolve_amp(True, torch.device('cuda', 0)) == (True, None)


def test_move_to_device_keeps_structure():
    batch = ({'a': torch.ones(2), 'b': 3}, [torch.zeros(1)])
    moved = device_utils.move_to_device(batch, torch.device('cpu'))
    assert isinstance(moved, tuple) and moved[0]['b'] == 3 and torch.equal(moved[1][0], torch.zeros(1))


# ------------------------------------------------------------------ timer
def test_timer_warm_up_and_average(monkeypatch):
    clock = iter(float(t) for t in range(1000))
    now = [0.0]

    def fake_time():
        now[0] = next(clock)
        return now[0]

    monkeypatch.setattr('common.timer.time.time', fake_time)
    timer = Timer()
    # Each tic/toc pair spans exactly 1 s of the fake clock.
    for _ in range(10):
        timer.tic()
        assert timer.toc() == 1.0
        assert timer.average_time == 0 and timer.calls == 0
    timer.tic()
    assert timer.toc() == 1.0 and timer.calls == 1 and timer.average_time == 1.0
    timer.tic()
    next(clock)  # one extra second passes: this interval is 2 s
    assert timer.toc(average=False) == 2.0
    assert timer.average_time == 1.5 and timer.total_time == 3.0


# ------------------------------------------------------------------ logger
def test_logger_format_levels_and_no_duplicates(tmp_path, capsys):
    logger = ColorLogger(str(tmp_path), 'train_logs.txt')
    logger.info('hello')
    logger.info('file only', console=False)
    logger.warning('careful')
    logger.error('broken')
    logger.critical('fatal')
    logger = ColorLogger(str(tmp_path), 'train_logs.txt')  # re-created: must not double lines
    logger.info('again')
    logger.close()
    text = (tmp_path / 'train_logs.txt').read_text()
    assert '\x1b[' not in text  # the file is plain text
    messages = [LOG_LINE.match(line).group(1) for line in text.splitlines()]
    assert messages == ['hello', 'file only', 'WRN: careful', 'ERR: broken', 'CRI: fatal', 'again']
    console = capsys.readouterr().out
    assert 'hello' in console and 'file only' not in console and console.count('again') == 1
    assert '\x1b[' not in console  # captured output is not a terminal


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_logger_colours_a_terminal_but_never_the_file(tmp_path, monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, 'stdout', terminal)
    logger = ColorLogger(str(tmp_path), 'test_logs.txt')
    logger.info('hello')
    logger.warning('careful')
    logger.close()
    lines = terminal.getvalue().splitlines()
    assert re.fullmatch(r'\x1b\[92m\d\d-\d\d \d\d:\d\d:\d\d\x1b\[0m hello', lines[0])
    assert lines[1].endswith(' \x1b[93mWRN: careful\x1b[0m')
    assert '\x1b[' not in (tmp_path / 'test_logs.txt').read_text()


# ----------------------------------------------- optimizer / LR / non-finite
class TinyModel(nn.Module):
    """The four trained submodules of the real Model."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(2, 2)
        self.pose2feat = nn.Linear(2, 2)
        self.position_net = nn.Linear(2, 2)
        self.rotation_net = nn.Linear(2, 1)


@pytest.fixture
def bare_trainer(tmp_path, cfg_state):
    """A Trainer without data or model, in a temporary experiment folder."""
    from common.trainer import Trainer
    cfg.set_args('0')
    cfg.output_root = str(tmp_path)
    cfg.make_run_dirs()
    trainer = Trainer()
    yield trainer
    trainer.close()


def test_optimizer_groups_and_lr_schedule(bare_trainer):
    model = TinyModel()
    cfg.lr, cfg.lr_backbone, cfg.lr_dec_factor, cfg.lr_dec_epoch = 1e-3, 1e-4, 10, [3, 5]
    opt = bare_trainer.get_optimizer(model)
    bare_trainer.optimizer = opt
    assert isinstance(opt, torch.optim.Adam) and len(opt.param_groups) == 4
    expected = [model.backbone, model.pose2feat, model.position_net, model.rotation_net]
    for group, module in zip(opt.param_groups, expected):
        assert [id(p) for p in group['params']] == [id(p) for p in module.parameters()]
        assert group['betas'] == (0.9, 0.999) and group['eps'] == 1e-8 and group['weight_decay'] == 0
    assert [g['lr'] for g in opt.param_groups] == [1e-4, 1e-3, 1e-3, 1e-3]

    lrs = {}
    for epoch in range(7):
        bare_trainer.set_lr(epoch)
        lrs[epoch] = [g['lr'] for g in opt.param_groups]
    # The original overwrites every group, the backbone's too.
    assert lrs[0] == [1e-3] * 4 and lrs[2] == [1e-3] * 4
    assert all(math.isclose(v, 1e-4) for v in lrs[3]) and all(math.isclose(v, 1e-4) for v in lrs[4])
    assert all(math.isclose(v, 1e-5) for v in lrs[5] + lrs[6])
    assert bare_trainer.get_lr() == opt.param_groups[-1]['lr']

    cfg.apply_lr_backbone = True
    bare_trainer.set_lr(3)
    got = [g['lr'] for g in opt.param_groups]
    assert math.isclose(got[0], 1e-5) and all(math.isclose(v, 1e-4) for v in got[1:])


def test_parameters_outside_the_groups_are_refused(bare_trainer):
    model = TinyModel()
    model.extra_head = nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match='extra_head.weight'):
        bare_trainer.get_optimizer(model)


class LossModel(TinyModel):
    """Returns the original's unreduced loss dict; NaN while ``poisoned``."""

    poisoned = False

    def forward(self, inputs, targets, meta_info, mode):
        out = self.rotation_net(self.position_net(self.pose2feat(self.backbone(inputs['img']))))
        scale = float('nan') if self.poisoned else 1.0
        return {'a': out.abs() * scale, 'b': (out - 1).pow(2)}


def with_model(trainer, model):
    """The bare trainer driving ``model`` (as network) with its usual optimizer."""
    trainer.model = trainer.network = model
    trainer.optimizer = trainer.get_optimizer(model)
    return trainer


def test_nonfinite_losses_are_skipped_counted_and_stop_the_run(bare_trainer):
    from common.trainer import NonFiniteLossError
    from common.utils.device import make_grad_scaler
    model = LossModel()
    trainer = with_model(bare_trainer, model)
    trainer.scaler = make_grad_scaler(trainer.device, False)
    trainer.max_nonfinite_in_a_row = 3
    inputs = {'img': torch.randn(4, 2)}

    losses = trainer.train_step(inputs, {}, {})
    assert set(losses) == {'a', 'b'} and all(math.isfinite(v) for v in losses.values())

    model.poisoned = True
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert trainer.train_step(inputs, {}, {}) is None
    assert trainer.nonfinite_in_a_row == 1 and trainer.nonfinite_total == 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # no step taken

    model.poisoned = False
    assert trainer.train_step(inputs, {}, {}) is not None
    assert trainer.nonfinite_in_a_row == 0 and trainer.nonfinite_total == 1

    trainer.save_model(0)
    model.poisoned = True
    trainer.train_step(inputs, {}, {})
    trainer.train_step(inputs, {}, {})
    with pytest.raises(NonFiniteLossError, match=r'3 consecutive.*snapshot_0\.pth\.tar is intact'):
        trainer.train_step(inputs, {}, {})
    log = open(trainer.logger.path).read()
    assert log.count('non-finite loss (a); step skipped') == 4


class BatchNormLossModel(TinyModel):
    """A BatchNorm layer in the backbone and a loss against ``targets['y']`` (the original's
    unreduced loss dict)."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))

    def forward(self, inputs, targets, meta_info, mode):
        out = self.rotation_net(self.position_net(self.pose2feat(self.backbone(inputs['img']))))
        return {'fit': (out - targets['y']).pow(2), 'size': out.abs()}


def training_state(model, optimizer, scaler):
    """Copies of every parameter and buffer, every optimizer state tensor/number and the
    scaler state, by name."""
    state = {f'model/{k}': v.detach().clone() for k, v in model.state_dict().items()}
    for index, entry in optimizer.state_dict()['state'].items():
        for key, value in entry.items():
            state[f'optimizer/{index}/{key}'] = value.clone() if torch.is_tensor(value) else value
    state['scaler'] = dict(scaler.state_dict())
    return state


def assert_bit_identical(before, after):
    assert before.keys() == after.keys()
    for key, value in before.items():
        if torch.is_tensor(value):
            assert value.dtype == after[key].dtype and torch.equal(value, after[key]), key
        else:
            assert value == after[key], key


@pytest.mark.parametrize('use_amp', [False, True])
def test_a_nan_target_leaves_model_optimizer_and_batchnorm_statistics_unchanged(bare_trainer, use_amp):
    from common.utils.device import make_grad_scaler
    torch.manual_seed(0)
    model = BatchNormLossModel()
    trainer = with_model(bare_trainer, model)
    trainer.use_amp = use_amp
    trainer.scaler = make_grad_scaler(trainer.device, use_amp, 256.0)
    inputs = {'img': torch.randn(4, 2)}
    good = {'y': torch.randn(4, 1)}
    assert trainer.train_step(inputs, good, {}) is not None  # Adam has state, BN has statistics
    assert model.backbone[1].num_batches_tracked.item() == 1

    before = training_state(model, trainer.optimizer, trainer.scaler)
    poisoned = {'y': good['y'].clone()}
    poisoned['y'][2, 0] = float('nan')
    assert trainer.train_step(inputs, poisoned, {}) is None
    assert_bit_identical(before, training_state(model, trainer.optimizer, trainer.scaler))
    assert trainer.nonfinite_total == 1

    # training goes on with finite statistics
    assert trainer.train_step(inputs, good, {}) is not None
    assert model.backbone[1].num_batches_tracked.item() == 2
    assert torch.isfinite(model.backbone[1].running_var).all()


class KinkLossModel(BatchNormLossModel):
    """Adds a loss term ``sqrt(out - out)`` while ``kinked``: its value is 0 (the loss stays
    finite) but the derivative of sqrt at 0 is inf, so backward fills the gradients with inf
    and NaN, as an overflow inside backward would."""

    kinked = False

    def forward(self, inputs, targets, meta_info, mode):
        loss = super().forward(inputs, targets, meta_info, mode)
        if self.kinked:
            out = self.rotation_net(self.position_net(self.pose2feat(self.backbone(inputs['img']))))
            loss['kink'] = (out - out.detach()).sqrt()
        return loss


def test_nonfinite_gradients_of_a_finite_loss_leave_the_model_unchanged_and_count_as_skips(bare_trainer):
    from common.trainer import NonFiniteLossError
    from common.utils.device import make_grad_scaler
    torch.manual_seed(0)
    model = KinkLossModel()
    trainer = with_model(bare_trainer, model)
    trainer.scaler = make_grad_scaler(trainer.device, False)
    trainer.max_nonfinite_in_a_row = 2
    inputs, targets = {'img': torch.randn(4, 2)}, {'y': torch.randn(4, 1)}
    # the bad case really is a finite loss with non-finite gradients (checked on a copy)
    probe = KinkLossModel()
    probe.kinked = True
    total = sum(value.mean() for value in probe(inputs, targets, {}, 'train').values())
    total.backward()
    assert torch.isfinite(total) and not torch.isfinite(probe.rotation_net.weight.grad).all()

    assert trainer.train_step(inputs, targets, {}) is not None  # Adam has state, BN has statistics
    model.kinked = True
    before = training_state(model, trainer.optimizer, trainer.scaler)
    assert trainer.train_step(inputs, targets, {}) is None
    assert_bit_identical(before, training_state(model, trainer.optimizer, trainer.scaler))
    assert trainer.nonfinite_total == 1 and trainer.nonfinite_in_a_row == 1

    model.kinked = False  # a valid step resets the run of skips and trains on
    assert trainer.train_step(inputs, targets, {}) is not None
    assert trainer.nonfinite_in_a_row == 0
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())

    model.kinked = True
    trainer.train_step(inputs, targets, {})
    with pytest.raises(NonFiniteLossError, match=r'2 consecutive'):
        trainer.train_step(inputs, targets, {})
    assert trainer.nonfinite_total == 3
    log = open(trainer.logger.path).read()
    assert log.count('non-finite gradient (finite loss); step skipped') == 3


@pytest.mark.parametrize('dynamic', [False, True])
def test_amp_overflow_skips_the_step_and_resets_the_scale(bare_trainer, dynamic):
    """GradScaler.step skips a step with inf gradients; the original then resets the
    scale to init_scale (a fixed scale), cfg.amp_dynamic_scale backs it off instead.
    (CPU float16 autocast stands in for CUDA's here.)"""
    from common.utils.device import make_grad_scaler
    cfg.amp_dynamic_scale = dynamic
    model = LossModel()
    trainer = with_model(bare_trainer, model)
    trainer.use_amp, trainer.init_scale = True, 256.0
    trainer.scaler = make_grad_scaler(trainer.device, True, 256.0)
    inputs = {'img': torch.randn(4, 2)}

    handle = model.rotation_net.weight.register_hook(lambda grad: grad * float('inf'))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert trainer.train_step(inputs, {}, {}) is not None  # the loss itself is finite
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert trainer.scaler.get_scale() == (128.0 if dynamic else 256.0)
    handle.remove()
    trainer.train_step(inputs, {}, {})
    assert not torch.equal(before['rotation_net.weight'], model.rotation_net.weight)
    assert trainer.scaler.get_scale() == (128.0 if dynamic else 256.0)

    model.poisoned = True  # a non-finite loss: skipped before backward; dynamic scaling backs off
    assert trainer.train_step(inputs, {}, {}) is None
    assert trainer.scaler.get_scale() == (64.0 if dynamic else 256.0)


def test_bfloat16_autocast_trains_without_loss_scaling(bare_trainer):
    """amp_dtype=bfloat16: the forward runs in bfloat16, no GradScaler, the step is taken.
    (CPU bfloat16 autocast stands in for CUDA's here.)"""
    from common.trainer import Trainer
    from common.utils.device import make_grad_scaler
    with pytest.raises(ValueError, match='amp_dtype'):
        Trainer(amp_dtype=torch.float32)
    model = LossModel()
    trainer = with_model(bare_trainer, model)
    trainer.use_amp, trainer.amp_dtype = True, torch.bfloat16
    trainer.scaler = make_grad_scaler(trainer.device, False)
    dtypes = []
    model.backbone.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    before = model.rotation_net.weight.detach().clone()
    losses = trainer.train_step({'img': torch.randn(4, 2)}, {}, {})
    assert dtypes == [torch.bfloat16]
    assert losses is not None and all(math.isfinite(v) for v in losses.values())
    assert not torch.equal(before, model.rotation_net.weight)


def test_single_sample_batch_is_skipped(bare_trainer):
    model = LossModel()
    bare_trainer.model = bare_trainer.network = model
    bare_trainer.optimizer = bare_trainer.get_optimizer(model)
    assert bare_trainer.train_step({'img': torch.randn(1, 2)}, {}, {}) is None


def tiny_training(trainer, batches):
    """Give ``trainer`` the LossModel, its optimizer and a loader of ``batches`` (no dataset)."""
    from common.utils.device import make_grad_scaler
    model = LossModel()
    trainer.model = model
    trainer.network = trainer._wrap_model(model)
    trainer.optimizer = trainer.get_optimizer(model)
    trainer.scaler = make_grad_scaler(trainer.device, False)
    trainer.trainset = object()
    trainer.batch_generator = batches
    trainer.itr_per_epoch = len(batches)
    return model


def test_snapshot_interval_is_a_constructor_argument(tmp_path, cfg_state):
    from common.trainer import Trainer
    cfg.set_args('0')
    cfg.output_root = str(tmp_path)
    cfg.end_epoch, cfg.lr_dec_epoch = 5, [10]
    cfg.make_run_dirs()
    trainer = Trainer(snapshot_interval=2)
    try:
        tiny_training(trainer, [({'img': torch.randn(4, 2)}, {}, {})])
        trainer.train()
    finally:
        trainer.close()
    # every second epoch, and the last one
    assert sorted(p.name for p in Path(cfg.model_dir).iterdir()) == \
        ['snapshot_1.pth.tar', 'snapshot_3.pth.tar', 'snapshot_4.pth.tar']
    assert trainer.global_step == 5


def final_bar_states(stderr, label):
    """The last drawn state of each tqdm bar whose description starts with ``label`` in
    captured stderr (a bar redraws itself after '\\r' and ends its line when closed)."""
    return [line.split('\r')[-1] for line in stderr.split('\n') if line.split('\r')[-1].startswith(label)]


def test_epoch_progress_bars_end_at_n_of_n(tmp_path, cfg_state, capsys):
    """The real training loop over 3 epochs of 2 batches: every epoch's bar ends at 2/2 and
    the epochs count 1/3, 2/3, 3/3 (the last bar reads N/N, not N-1/N)."""
    from common.trainer import Trainer
    cfg.set_args('0')
    cfg.output_root = str(tmp_path)
    cfg.end_epoch, cfg.lr_dec_epoch = 3, [10]
    cfg.make_run_dirs()
    trainer = Trainer()
    try:
        tiny_training(trainer, [({'img': torch.randn(4, 2)}, {}, {})] * 2)
        capsys.readouterr()
        trainer.train()
    finally:
        trainer.close()
    captured = capsys.readouterr()
    finals = final_bar_states(captured.err, 'Epoch ')
    assert [state.split(':')[0] for state in finals] == ['Epoch 1/3', 'Epoch 2/3', 'Epoch 3/3']
    assert all(re.search(r'\| 2/2 \[', state) for state in finals), finals
    assert 'Epoch 3/3 done: 2 iterations' in captured.out


def test_test_progress_bar_ends_at_n_of_n(tmp_path, cfg_state, capsys):
    released_experiment(tmp_path)
    cfg.make_run_dirs()
    capsys.readouterr()
    run_tester()
    finals = final_bar_states(capsys.readouterr().err, 'Test')
    assert len(finals) == 1 and re.search(r'\| 2/2 \[', finals[0]), finals


def test_sync_bn_in_one_process_keeps_plain_batchnorm_with_a_warning(bare_trainer):
    from common.nets.layer import GraphConvBlock
    cfg.sync_bn = True
    block = GraphConvBlock(torch.eye(3), 4, 5)
    assert bare_trainer._wrap_model(block) is block
    assert type(block.bn) is nn.BatchNorm1d
    assert 'cfg.sync_bn acts only under torchrun' in open(bare_trainer.logger.path).read()


def test_original_set_up_names_call_the_public_ones(bare_trainer, monkeypatch):
    calls = []
    monkeypatch.setattr(bare_trainer, 'make_batch_generator', lambda: calls.append('data'))
    monkeypatch.setattr(bare_trainer, 'make_model', lambda: calls.append('model'))
    bare_trainer._make_batch_generator()
    bare_trainer._make_model()
    bare_trainer.setup()
    assert calls == ['data', 'model', 'data', 'model']


class RecordingTestModel(nn.Module):
    """A test-mode model recording the ``render`` argument of its calls."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, inputs, targets, meta_info, mode, render=False):
        self.calls.append(('forward', mode, render))
        batch = inputs['img'].shape[0]
        return {'cam_param': torch.zeros(batch, 3), 'smpl_pose': torch.zeros(batch, 72),
                'smpl_shape': torch.zeros(batch, 10), 'smpl_mesh_cam': torch.zeros(batch, 6890, 3)}

    def camera_translation(self, cam_param, meta_info=None, render=False):
        self.calls.append(('camera_translation', render))
        return cam_param + 1


class CountingTestSet:
    """Evaluates each sample to its index."""

    def evaluate(self, outs, cur_sample_idx):
        return {'index': [cur_sample_idx + i for i in range(len(outs))]}


@pytest.mark.parametrize('render', [False, True])
def test_tester_passes_the_render_option_as_an_argument(tmp_path, cfg_state, render):
    from common.tester import Tester
    cfg.set_args('0')
    cfg.output_root = str(tmp_path)
    cfg.render = render
    cfg.make_run_dirs()
    tester = Tester(0)
    try:
        tester.model = tester.network = RecordingTestModel()
        tester.testset = CountingTestSet()
        tester.batch_generator = [({'img': torch.zeros(n, 1)}, {}, {}) for n in (3, 2)]
        records = tester._run_batches()
    finally:
        tester.close()
    assert tester.model.calls == [('forward', 'test', render), ('camera_translation', render)] * 2
    assert [r[1]['index'] for r in records] == [[0, 1, 2], [3, 4]]
    assert np.array_equal(records[1][2]['sample_idx'], [3, 4]) and np.all(records[0][2]['cam_trans'] == 1)
    assert cfg.render == render  # read, not toggled


class SummarisingTestSet(CountingTestSet):
    def print_eval_result(self, eval_result):
        pass

    def summarize(self, eval_result):
        return {'count': len(eval_result['index'])}


def run_tester(**kwargs):
    """A Tester of snapshot 10 over two fake batches; returns it after ``test()``."""
    from common.tester import Tester
    tester = Tester(10, **kwargs)
    try:
        tester.model = tester.network = RecordingTestModel()
        tester.testset = SummarisingTestSet()
        tester.batch_generator = [({'img': torch.zeros(n, 1)}, {}, {}) for n in (3, 2)]
        tester.test()
    finally:
        tester.close()
    return tester


def released_experiment(tmp_path):
    """``<tmp>/released/exp_A`` with a checkpoint folder, and ``output_root`` ``<tmp>/out``."""
    exp = tmp_path / 'released' / 'exp_A'
    (exp / 'checkpoint').mkdir(parents=True)
    cfg.set_args('0', is_test=True, exp_dir=str(exp))
    cfg.output_root = str(tmp_path / 'out')
    cfg.testset = 'PW3D'
    return exp


def test_3dpw_and_3dpw_crowd_results_do_not_overwrite_each_other(tmp_path, cfg_state):
    from common.tester import result_stem
    assert result_stem('PW3D-crowd', 10) == 'PW3D-crowd_snapshot_10'
    exp = released_experiment(tmp_path)
    cfg.make_run_dirs()
    run_tester()
    cfg.crowd = True
    run_tester()
    assert sorted(os.listdir(exp / 'result')) == [
        'eval_PW3D-crowd_snapshot_10.json', 'eval_PW3D_snapshot_10.json',
        'predictions_PW3D-crowd_snapshot_10.npz', 'predictions_PW3D_snapshot_10.npz']
    assert json.loads((exp / 'result' / 'eval_PW3D_snapshot_10.json').read_text()) == {'count': 5}


def test_a_read_only_experiment_is_evaluated_into_the_fallback_folder(tmp_path, cfg_state, monkeypatch):
    exp = released_experiment(tmp_path)
    before = sorted(str(p.relative_to(exp)) for p in exp.rglob('*'))
    real_access = os.access
    # running as root makes chmod ineffective: the experiment folder reports itself read-only
    monkeypatch.setattr(os, 'access', lambda path, mode: (not str(path).startswith(str(exp))
                                                          and real_access(path, mode)))
    monkeypatch.setattr(Path, 'mkdir', read_only_mkdir(exp, Path.mkdir))
    from common.tester import evaluation_output_dir
    fallback = tmp_path / 'out' / 'eval_exp_A'
    cfg.eval_output_dir = evaluation_output_dir(str(exp), cfg.output_root)
    assert cfg.eval_output_dir == str(fallback)
    tester = run_tester()
    assert tester.result_dir == str(fallback / 'result')
    assert sorted(os.listdir(fallback / 'result')) == ['eval_PW3D_snapshot_10.json', 'predictions_PW3D_snapshot_10.npz']
    assert sorted(str(p.relative_to(exp)) for p in exp.rglob('*')) == before  # nothing written there
    assert (fallback / 'log' / 'test_logs.txt').is_file()


def read_only_mkdir(folder, real_mkdir):
    """``Path.mkdir`` refusing to create anything inside ``folder`` (a read-only mount)."""
    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(folder)):
            if self.is_dir() and kwargs.get('exist_ok'):
                return None
            raise PermissionError(13, 'Read-only file system', str(self))
        return real_mkdir(self, *args, **kwargs)
    return mkdir


def test_a_result_path_that_is_a_file_sends_the_whole_evaluation_elsewhere(tmp_path, cfg_state):
    """One decision for log/, result/ and vis/: a file named ``result`` in the experiment moves
    all three to ``<output_root>/eval_<exp>``, and the experiment is left as it was."""
    from common.tester import evaluation_output_dir
    exp = released_experiment(tmp_path)
    (exp / 'result').write_text('not a folder')
    (exp / 'log').mkdir()
    fallback = tmp_path / 'out' / 'eval_exp_A'
    assert evaluation_output_dir(str(exp), cfg.output_root) == str(fallback)
    (exp / 'result').unlink()
    assert evaluation_output_dir(str(exp), cfg.output_root) is None  # a missing folder can be made
    (exp / 'result').write_text('not a folder')
    cfg.eval_output_dir = evaluation_output_dir(str(exp), cfg.output_root)
    cfg.make_run_dirs()
    tester = run_tester()
    assert sorted(os.listdir(fallback / 'result')) == ['eval_PW3D_snapshot_10.json', 'predictions_PW3D_snapshot_10.npz']
    assert sorted(os.listdir(fallback / 'log')) == ['metrics.csv', 'test_logs.txt']
    assert (exp / 'result').read_text() == 'not a folder' and os.listdir(exp / 'log') == []
    assert tester.result_paths[0] == str(fallback / 'result' / 'eval_PW3D_snapshot_10.json')


def test_explicit_result_dir_is_used(tmp_path, cfg_state):
    released_experiment(tmp_path)
    tester = run_tester(result_dir=str(tmp_path / 'mine'), log_dir=str(tmp_path / 'mine_log'))
    assert sorted(os.listdir(tmp_path / 'mine')) == ['eval_PW3D_snapshot_10.json', 'predictions_PW3D_snapshot_10.npz']
    assert sorted(os.listdir(tmp_path / 'mine_log')) == ['metrics.csv', 'test_logs.txt']
    assert tester.result_dir == str(tmp_path / 'mine')


def test_split_batch_uses_the_batch_size_not_the_last_key():
    from common.utils.batch import split_batch
    out = {'smpl_pose': np.arange(6).reshape(3, 2), 'aid': np.array([5, 6, 7]), 'k': np.ones((1, 4))}
    samples, skipped = split_batch(out, 3)
    assert skipped == ['k']
    assert [s['aid'] for s in samples] == [5, 6, 7]
    assert np.array_equal(samples[2]['smpl_pose'], [4, 5])


def test_config_yaml_round_trips(bare_trainer, tmp_path):
    import yaml
    saved = yaml.safe_load(open(bare_trainer.config_path))
    assert saved['output_dir'] == cfg.output_dir and saved['input_img_shape'] == [256, 256]
    assert 'princpt' not in saved
    cfg.reset()
    cfg.update(bare_trainer.config_path)
    # the options come back, the run's folders never do
    assert cfg.input_img_shape == (256, 256) and cfg.output_dir is None


# ============================================================ on the synthetic tree
# These run the real model and loaders through main/train.py and main/test.py (slow tier).

LOSS_TERMS = ('body_joint_img', 'smpl_joint_img', 'smpl_pose', 'smpl_shape', 'body_joint_proj',
              'body_joint_cam', 'smpl_joint_cam')
ITERATION_LINE = re.compile(
    r'^Epoch (\d+)/(\d+) itr (\d+)/(\d+): lr: ([0-9.e-]+) speed: \d+\.\d\d\(\d+\.\d\ds r\d+\.\d\d\)s/itr '
    r'\d+\.\d\dh/epoch ' + ' '.join(rf'loss_{t}: -?\d+\.\d{{4}}' for t in LOSS_TERMS) + '$')
NUM_STATE_ENTRIES = 1423  # the released checkpoints' network entries (tests/data/state_dict_keys.txt)


def load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def snapshot(exp_dir, epoch):
    return Path(exp_dir) / 'checkpoint' / f'snapshot_{epoch}.pth.tar'


def log_messages(path):
    return [LOG_LINE.match(line).group(1) for line in Path(path).read_text().splitlines()
            if LOG_LINE.match(line)]


def assert_same_tensors(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def assert_same_optimizer(a, b):
    assert a['param_groups'] == b['param_groups']
    assert a['state'].keys() == b['state'].keys()
    for index in a['state']:
        assert_same_tensors(a['state'][index], b['state'][index])


def schedule_with(base_yaml, folder, **changes):
    values = yaml.safe_load(Path(base_yaml).read_text())
    values.update(changes)
    path = Path(folder) / 'schedule.yaml'
    path.write_text(yaml.safe_dump(values))
    return str(path)


@pytest.fixture(scope='module')
def two_epoch_runs(trained_snapshot, tiny_schedule_yaml, tmp_path_factory):
    """(resumed, uninterrupted): epoch 1 resumed from the 1-epoch run, and a 2-epoch run."""
    from main.train import main
    two_epochs = schedule_with(tiny_schedule_yaml, tmp_path_factory.mktemp('two_epochs'), end_epoch=2)
    resumed = run_in_process(main, ['--gpu', '0', '--continue', '--exp_dir', str(trained_snapshot),
                                    '--cfg', two_epochs])
    uninterrupted = run_in_process(main, ['--gpu', '0', '--cfg', two_epochs])
    return Path(resumed), Path(uninterrupted)


@pytest.mark.slow
def released_key_shapes():
    """(key, shape) of every entry of the released checkpoints, in their order."""
    rows = (line.split() for line in (Path(__file__).parent / 'data' / 'state_dict_keys.txt').read_text().splitlines()
            if line.strip())
    return [(key, () if shape == 'scalar' else tuple(int(n) for n in shape.split('x'))) for key, shape in rows]


@pytest.mark.slow
def test_two_iteration_run_writes_snapshot_log_and_config(trained_snapshot):
    assert sorted(p.name for p in (trained_snapshot / 'checkpoint').iterdir()) == ['snapshot_0.pth.tar']
    state = load(snapshot(trained_snapshot, 0))
    assert set(state) == {'epoch', 'network', 'optimizer', 'scaler', 'config'}
    assert state['epoch'] == 0 and state['scaler'] == {}  # no AMP on the CPU
    network = state['network']
    assert len(network) == NUM_STATE_ENTRIES and all(k.startswith('module.') for k in network)
    assert 'module.human_model_layer.th_faces' in network and 'module.backbone.conv1.weight' in network
    groups = state['optimizer']['param_groups']
    assert len(groups) == 4 and all(g['lr'] == 1e-3 for g in groups)
    steps = {float(s['step']) for s in state['optimizer']['state'].values()}
    assert steps == {2.0}  # both iterations stepped every parameter
    # The optimizer entry lists the released files' learnable tensors one by one, in their
    # order within each module group, whatever the in-memory storage (stacked graph vertices).
    learnable = [(key, shape) for key, shape in released_key_shapes()
                 if not key.startswith('module.human_model_layer.')
                 and not re.search(r'running_(mean|var)$|num_batches_tracked$', key)]
    by_group = [[shape for key, shape in learnable if key.startswith(f'module.{name}.')]
                for name in ('backbone', 'pose2feat', 'position_net', 'rotation_net')]
    assert [len(g['params']) for g in groups] == [len(shapes) for shapes in by_group]
    for group, shapes in zip(groups, by_group):
        for index, shape in zip(group['params'], shapes):
            assert tuple(state['optimizer']['state'][index]['exp_avg'].shape) == shape, (index, shape)
    assert state['config']['seed'] == 0 and state['config']['train_batch_size'] == 2

    messages = log_messages(trained_snapshot / 'log' / 'train_logs.txt')
    lines = [m for m in messages if m.startswith('Epoch ') and ' itr ' in m]
    assert len(lines) == 2, lines
    assert sum(m.startswith('Epoch 1/1 done: 2 iterations, mean loss') for m in messages) == 1
    for itr, line in enumerate(lines):
        match = ITERATION_LINE.match(line)
        assert match, line
        assert match.groups()[:5] == ('0', '1', str(itr), '2', '0.001')
    assert f'Write snapshot into {snapshot(trained_snapshot, 0)}' in messages
    assert '\x1b[' not in (trained_snapshot / 'log' / 'train_logs.txt').read_text()
    assert any('CUDA is not available' in m for m in messages)

    saved = yaml.safe_load((trained_snapshot / 'config.yaml').read_text())
    assert saved['output_dir'] == str(trained_snapshot) and saved['max_iters_per_epoch'] == 2


@pytest.mark.slow
def test_resume_continues_in_a_new_folder_with_optimizer_state(trained_snapshot, two_epoch_runs):
    resumed, _ = two_epoch_runs
    assert resumed != trained_snapshot and resumed.parent == trained_snapshot.parent
    assert sorted(p.name for p in (trained_snapshot / 'checkpoint').iterdir()) == ['snapshot_0.pth.tar']
    assert sorted(p.name for p in (resumed / 'checkpoint').iterdir()) == ['snapshot_0.pth.tar', 'snapshot_1.pth.tar']
    first, second = load(snapshot(trained_snapshot, 0)), load(snapshot(resumed, 1))
    assert second['epoch'] == 1
    steps = {float(s['step']) for s in second['optimizer']['state'].values()}
    assert steps == {4.0}  # 2 restored + 2 new: Adam's state was restored, not restarted
    assert not torch.equal(first['network']['module.rotation_net.cam_out.0.weight'],
                           second['network']['module.rotation_net.cam_out.0.weight'])
    messages = log_messages(resumed / 'log' / 'train_logs.txt')
    assert f"Load checkpoint from {resumed / 'checkpoint' / 'snapshot_0.pth.tar'}" in messages
    assert [m.split(':')[0] for m in messages if m.startswith('Epoch ') and ' itr ' in m] == \
        ['Epoch 1/2 itr 0/2', 'Epoch 1/2 itr 1/2']


@pytest.mark.slow
def test_seeded_runs_are_deterministic(trained_snapshot, two_epoch_runs):
    _, uninterrupted = two_epoch_runs
    a, b = load(snapshot(trained_snapshot, 0)), load(snapshot(uninterrupted, 0))
    assert_same_tensors(a['network'], b['network'])
    assert_same_optimizer(a['optimizer'], b['optimizer'])


@pytest.mark.slow
def test_resume_after_an_epoch_equals_an_uninterrupted_run(two_epoch_runs):
    resumed, uninterrupted = two_epoch_runs
    a, b = load(snapshot(resumed, 1)), load(snapshot(uninterrupted, 1))
    assert_same_tensors(a['network'], b['network'])
    assert_same_optimizer(a['optimizer'], b['optimizer'])


@pytest.mark.slow
def test_test_script_writes_metrics_and_predictions(trained_snapshot, tiny_schedule_yaml):
    from data.PW3D.PW3D import PW3D
    from main.test import main
    run_in_process(main, ['--gpu', '0', '--exp_dir', str(trained_snapshot), '--test_epoch', '0',
                          '--cfg', str(tiny_schedule_yaml), '--flip', '--save_meshes'])
    result = trained_snapshot / 'result'
    metrics = json.loads((result / 'eval_PW3D_snapshot_0.json').read_text())
    assert metrics and all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0
                           for v in metrics.values() if not isinstance(v, dict))
    with np.load(result / 'predictions_PW3D_snapshot_0.npz') as npz:
        arrays = dict(npz)
    state = cfg.snapshot()
    try:
        cfg.update(str(tiny_schedule_yaml))
        count = len(PW3D(None, 'test'))
    finally:
        cfg.restore(state)
    assert arrays['smpl_pose'].shape == (count, 72) and arrays['smpl_shape'].shape == (count, 10)
    assert arrays['cam_trans'].shape == (count, 3) and arrays['mesh_cam'].shape == (count, 6890, 3)
    assert np.array_equal(arrays['sample_idx'], np.arange(count))
    # t_z = 48.828125 * sigmoid(.) lies in (0, 48.83) m (docs/METHOD.md, "Network")
    assert np.all(arrays['cam_trans'][:, 2] > 0) and np.all(arrays['cam_trans'][:, 2] < 48.83)
    messages = log_messages(trained_snapshot / 'log' / 'test_logs.txt')
    assert any('--flip is ignored' in m for m in messages)
    assert f"Load checkpoint from {snapshot(trained_snapshot, 0)}" in messages


@pytest.mark.slow
def test_missing_snapshot_is_named(trained_snapshot, tiny_schedule_yaml):
    from main.test import main
    with pytest.raises(FileNotFoundError, match=r'Cannot find model at .*snapshot_9\.pth\.tar.*snapshot_0\.pth\.tar'):
        run_in_process(main, ['--gpu', '0', '--exp_dir', str(trained_snapshot), '--test_epoch', '9',
                              '--cfg', str(tiny_schedule_yaml)])


@pytest.mark.slow
def test_checkpoint_with_wrong_shapes_fails_naming_the_keys(trained_snapshot, tmp_path, data_cfg):
    from common.tester import Tester
    from common.utils.checkpoint import CheckpointMismatchError
    state = load(snapshot(trained_snapshot, 0))
    state['network']['module.rotation_net.cam_out.0.weight'] = state['network']['module.rotation_net.cam_out.0.weight'][:2]
    del state['network']['module.backbone.bn1.running_var']
    (tmp_path / 'checkpoint').mkdir()
    # The released layout (epoch and network only) is enough to get to the strict check.
    torch.save({'epoch': 0, 'network': state['network']}, tmp_path / 'checkpoint' / 'snapshot_0.pth.tar')
    cfg.output_dir = str(tmp_path)
    cfg.make_run_dirs()
    tester = Tester(0)
    tester.vertex_num, tester.joint_num = 6890, 30
    with pytest.raises(CheckpointMismatchError) as info:
        tester.make_model()
    tester.close()
    message = str(info.value)
    assert 'module.backbone.bn1.running_var' not in message  # names are the model's
    assert 'missing keys (1): backbone.bn1.running_var' in message
    assert 'rotation_net.cam_out.0.weight: checkpoint (2,' in message


@pytest.mark.slow
def test_warm_start_reports_its_partial_load(tmp_path, smpl_cfg):
    from common.trainer import Trainer
    from tests.test_checkpoint import fake_pose_resnet_state
    from tool.convert_simple_to_i2l import convert
    state = fake_pose_resnet_state()
    torch.save(state, tmp_path / 'pose_resnet_50_256x192.pth.tar')
    warm = convert(str(tmp_path / 'pose_resnet_50_256x192.pth.tar'), str(tmp_path / 'snapshot_0.pth.tar'))

    cfg.set_args('0', continue_train=True)
    cfg.output_root = str(tmp_path / 'runs')
    cfg.make_run_dirs()
    trainer = Trainer(warm_start_path=warm)
    trainer.vertex_num, trainer.joint_num = 6890, 30
    trainer.make_model()
    trainer.close()
    report = trainer.warm_start_report
    assert len(report.loaded) == 318 and all(k.startswith('backbone.') for k in report.loaded)
    assert sorted(report.skipped_unexpected) == ['backbone.deconv_layers.0.weight',
                                                 'backbone.deconv_layers.1.running_mean',
                                                 'backbone.final_layer.bias', 'backbone.final_layer.weight']
    assert trainer.start_epoch == 1
    assert torch.equal(trainer.model.backbone.layer3[2].conv2.weight, state['layer3.2.conv2.weight'])
    assert any(k.startswith('rotation_net.') for k in report.not_in_file)
    text = Path(trainer.logger.path).read_text()
    assert 'Partial load from' in text and '318 model entries loaded' in text and 'final_layer.weight' in text


@pytest.mark.slow
def test_scripts_run_from_inside_main(trained_snapshot, tiny_schedule_yaml):
    """``python train.py`` / ``python test.py`` from main/ (no PYTHONPATH); expected failures
    end with a one-line message and exit status 1."""
    main_dir = Path(__file__).resolve().parents[1] / 'main'
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    out = subprocess.run([sys.executable, 'train.py', '--help'], cwd=main_dir, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0 and '--init_scale' in out.stdout
    out = subprocess.run([sys.executable, 'test.py', '--gpu', '0', '--exp_dir', str(trained_snapshot),
                          '--test_epoch', '9', '--cfg', str(tiny_schedule_yaml)],
                         cwd=main_dir, env=env, capture_output=True, text=True)
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(f"ERROR: Cannot find model at {snapshot(trained_snapshot, 9)}")
    assert 'Traceback' not in out.stderr
