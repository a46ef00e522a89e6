"""AMP training steps on CUDA: the real Trainer (model, Adam, GradScaler) on batches of the
synthetic data tree, with the original's fixed loss scale and with ``amp_dynamic_scale``.

The fixed scale (the original's): a GradScaler at ``init_scale`` reset to it after every step,
so it neither grows nor backs off; a step whose scaled gradients overflow is skipped and the
next one overflows alike.  The dynamic scale: GradScaler's own update, halving the scale after
each overflow (no growth within its 2000-step interval).  A skipped step is recognised by its
effect: no parameter changes (Adam moves every parameter with a gradient on a step it takes).
"""
import itertools
import math

import pytest
import torch

from main.config import cfg

pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')]

# 2^40 times any loss gradient above 6e-8 exceeds float16's range (65504): every step overflows.
OVERFLOWING_SCALE = 2.0 ** 40


@pytest.fixture
def make_trainer(data_cfg, tmp_path):
    """``make_trainer(init_scale, dynamic)``: a set-up AMP Trainer on CUDA device 0 (batch 4,
    synthetic tree, He-initialised backbone in place of pretrained weights) and three of its
    training batches."""
    from common.trainer import Trainer
    from tool.synthetic.weights import he_initialise_convolutions_
    made = []

    def make(init_scale, dynamic):
        cfg.set_args('0')
        cfg.output_root = str(tmp_path / 'runs')
        cfg.train_batch_size, cfg.num_thread, cfg.amp_dynamic_scale = 4, 0, dynamic
        cfg.make_run_dirs(new_only=True)
        trainer = Trainer(use_amp=True, init_scale=init_scale)
        made.append(trainer)
        trainer.setup()
        he_initialise_convolutions_(trainer.model.backbone)   # see tool/synthetic/weights.py
        trainer.begin_epoch(0)
        batches = list(itertools.islice(trainer.batch_generator, 3))
        assert trainer.device.type == 'cuda' and trainer.use_amp and trainer.scaler.is_enabled()
        return trainer, batches

    yield make
    for trainer in made:
        trainer.close()


def step_changes_parameters(trainer, batch):
    """One ``train_step`` with a finite loss; whether it changed any parameter (was taken)."""
    before = [p.detach().clone() for p in trainer.model.parameters()]
    losses = trainer.train_step(*batch)
    assert losses is not None and all(math.isfinite(v) for v in losses.values()), losses
    return any(not torch.equal(p, b) for p, b in zip(trainer.model.parameters(), before))


def test_fixed_scale_trains_in_float16_at_its_scale(make_trainer):
    """A fixed scale small enough for this start's gradients (up to about 1e4 in float32 at
    initialisation): steps are taken in float16 and the scale never moves."""
    trainer, batches = make_trainer(1.0, dynamic=False)
    dtypes = []
    trainer.model.backbone.conv1.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    taken = []
    for batch in batches:
        taken.append(step_changes_parameters(trainer, batch))
        assert trainer.scaler.get_scale() == 1.0
    assert dtypes == [torch.float16] * len(batches)
    assert any(taken), 'every step overflowed at the scale of 1'


def test_fixed_scale_never_backs_off(make_trainer):
    """The original's fixed-scale rule (growth off, no back-off), at a scale that overflows."""
    trainer, batches = make_trainer(OVERFLOWING_SCALE, dynamic=False)
    for batch in batches[:2]:
        assert not step_changes_parameters(trainer, batch)   # GradScaler skipped the step
        assert trainer.scaler.get_scale() == OVERFLOWING_SCALE


def test_dynamic_scale_halves_on_each_overflow_until_steps_are_taken(make_trainer):
    trainer, batches = make_trainer(OVERFLOWING_SCALE, dynamic=True)
    assert not step_changes_parameters(trainer, batches[0])
    assert trainer.scaler.get_scale() == OVERFLOWING_SCALE / 2
    taken_steps = 0
    for batch in itertools.islice(itertools.cycle(batches), 60):
        scale = trainer.scaler.get_scale()
        if step_changes_parameters(trainer, batch):
            taken_steps += 1
            assert trainer.scaler.get_scale() == scale   # no growth within the 2000-step interval
        else:
            assert trainer.scaler.get_scale() == scale / 2
        if taken_steps == 3:
            break
    assert taken_steps == 3, f'no step was taken down to the scale {trainer.scaler.get_scale()}'
    assert 1.0 <= trainer.scaler.get_scale() < OVERFLOWING_SCALE
