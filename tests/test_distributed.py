"""Multi-process training and testing (torchrun / DistributedDataParallel), on the CPU with gloo.

Two processes are started either with ``torch.multiprocessing`` (calling ``main.train.main``
in each, with torchrun's environment variables set, so their state can be inspected) or with
``python -m torch.distributed.run`` itself.  PyTorch's SyncBatchNorm needs CUDA, so the gloo
runs with ``sync_bn`` give the trainer the test-only CPU implementation of
``tests/cpu_sync_batchnorm.py``.  The CUDA/NCCL run is skipped without a GPU.
"""
import json
import math
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import yaml
from torch import nn

from common.utils import distributed as dist_utils
from common.utils import device as device_utils
from main.config import cfg
from tests.cpu_sync_batchnorm import convert_to_cpu_sync_batchnorm
from tests.helpers import run_command, run_in_process

# These tests set options on the global ``cfg``; ``cfg_state`` restores it after each test.
pytestmark = pytest.mark.usefixtures('cfg_state')

ROOT = Path(__file__).resolve().parents[1]
NUM_STATE_ENTRIES = 1423  # the released checkpoints' network entries (tests/data/state_dict_keys.txt)


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def torchrun_env(rank, world_size, port):
    return {'RANK': str(rank), 'LOCAL_RANK': str(rank), 'WORLD_SIZE': str(world_size),
            'LOCAL_WORLD_SIZE': str(world_size), 'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': str(port)}


def spawn(worker, world_size, *args, timeout=240):
    """Run ``worker(rank, *args)`` in ``world_size`` spawned processes; any failure fails the test."""
    context = mp.start_processes(worker, args=(world_size, free_port()) + args, nprocs=world_size,
                                 join=False, start_method='spawn')
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f'{worker.__name__} did not finish within {timeout} s')


def write_yaml(path, values):
    path.write_text(yaml.safe_dump(values))
    return str(path)


# ---------------------------------------------------------------- environment and devices
def test_torchrun_environment_is_read():
    assert dist_utils.env_info({}) is None and not dist_utils.launched_by_torchrun({'RANK': '0'})
    info = dist_utils.env_info({'RANK': '3', 'LOCAL_RANK': '1', 'WORLD_SIZE': '4', 'LOCAL_WORLD_SIZE': '2'})
    assert info == dist_utils.DistInfo(3, 4, 1, 2) and not info.is_main
    with pytest.raises(ValueError, match='Inconsistent'):
        dist_utils.env_info({'RANK': '4', 'LOCAL_RANK': '0', 'WORLD_SIZE': '4'})
    with pytest.raises(ValueError, match='Malformed'):
        dist_utils.env_info({'RANK': 'x', 'LOCAL_RANK': '0', 'WORLD_SIZE': '4'})
    assert dist_utils.default_backend('cuda:1') == 'nccl' and dist_utils.default_backend('cpu') == 'gloo'
    # outside a job the rank helpers answer for one process
    assert dist_utils.get_rank() == 0 and dist_utils.get_world_size() == 1 and dist_utils.is_main_process()
    assert dist_utils.gather_objects('x') == ['x'] and dist_utils.broadcast_object(5) == 5


def test_rank_device_follows_local_rank_without_remapping(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 4)
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    setup = device_utils.select_rank_device(None, 2)
    assert setup.device == torch.device('cuda', 2) and setup.device_ids == [2] and setup.num_devices == 1
    assert device_utils.select_rank_device('2-3', 1).device == torch.device('cuda', 3)
    assert 'CUDA_VISIBLE_DEVICES' not in os.environ
    with pytest.raises(ValueError, match='lists 2 id'):
        device_utils.select_rank_device('0,1', 2)
    with pytest.raises(ValueError, match='4 device'):
        device_utils.select_rank_device(None, 5)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    setup = device_utils.select_rank_device(None, 1)
    assert setup.device.type == 'cpu' and setup.num_devices == 1 and 'gloo' in setup.warnings[0]


# ---------------------------------------------------------------------------- samplers
def epoch_seed(epoch):
    return 1000 + epoch


def test_shard_sampler_splits_one_seeded_permutation():
    n, world, batch = 11, 3, 2
    for epoch in (0, 1):
        # what a single process's shuffling loader draws with a generator of that seed
        generator = torch.Generator()
        generator.manual_seed(epoch_seed(epoch))
        single = list(torch.utils.data.RandomSampler(range(n), generator=generator))
        shards = []
        for rank in range(world):
            sampler = dist_utils.DistributedShardSampler(n, world, rank, epoch_seed)
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
            assert len(shards[-1]) == len(sampler) == 4  # ceil(11 / 3): equal iteration counts
        flat = [i for shard in shards for i in shard]
        assert sorted(i for i in flat if i < n) == list(range(n))  # the whole epoch, once each
        # the one padding copy repeats the epoch's first index as its later visit (round 1)
        assert [i for i in flat if i >= n] == [single[0] + n]
        # step k of all ranks together is the single process's batch k at batch world*batch
        for k in range(1):
            together = sorted(i for shard in shards for i in shard[k * batch:(k + 1) * batch])
            assert together == sorted(single[k * world * batch:(k + 1) * world * batch])
    one = dist_utils.DistributedShardSampler(n, 1, 0, epoch_seed)
    first = list(one)
    one.set_epoch(1)
    assert sorted(first) == list(range(n)) and first != list(one)  # reshuffled per epoch
    # more ranks than samples: padding rounds 1 and 2, each a distinct later visit
    tiny = [list(dist_utils.DistributedShardSampler(2, 5, rank, epoch_seed, shuffle=False)) for rank in range(5)]
    assert tiny == [[0], [1], [2], [3], [4]]
    assert [i % 2 for shard in tiny for i in shard] == [0, 1, 0, 1, 0]


def test_sharded_batch_sampler_deals_whole_batches():
    rank0 = dist_utils.ShardedBatchSampler(10, 3, 2, 0)
    rank1 = dist_utils.ShardedBatchSampler(10, 3, 2, 1)
    assert list(rank0) == [[0, 1, 2], [6, 7, 8]] and rank0.batch_ids() == [0, 2]
    assert list(rank1) == [[3, 4, 5], [9]] and rank1.batch_ids() == [1, 3] and len(rank1) == 2


# ------------------------------------------------------------------------ SyncBatchNorm
def sync_bn_net():
    from common.nets.layer import GraphConvBlock
    torch.manual_seed(0)
    adj = torch.eye(3) * 0.5 + 0.5 / 3
    conv = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4))
    graph = GraphConvBlock(adj, 5, 6)
    for bn in (conv[1], graph.bn):
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        nn.init.uniform_(bn.bias, -0.5, 0.5)
    return nn.ModuleDict({'conv': conv, 'graph': graph})


def sync_bn_inputs():
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(8, 2, 6, 6, generator=generator) * 3 + 1
    vertices = torch.randn(8, 3, 5, generator=generator) * 2 - 1
    return images, vertices


def sync_bn_loss(net, images, vertices):
    """A loss summed over samples, so the single-process loss is the sum of the ranks' losses."""
    return (net['conv'](images).pow(2) * torch.linspace(0.5, 1.5, 4).view(1, 4, 1, 1)).sum() + \
        (net['graph'](vertices).pow(3)).sum()


SHARDS = (slice(0, 3), slice(3, 8))  # unequal batches: the statistics must weight by count


def _sync_bn_worker(rank, world_size, port, out_dir):
    os.environ.update(torchrun_env(rank, world_size, port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group('gloo')
    try:
        net = convert_to_cpu_sync_batchnorm(sync_bn_net())
        net.train()
        images, vertices = sync_bn_inputs()
        images = images[SHARDS[rank]].clone().requires_grad_(True)
        vertices = vertices[SHARDS[rank]].clone().requires_grad_(True)
        sync_bn_loss(net, images, vertices).backward()
        torch.save({'state': net.state_dict(), 'image_grad': images.grad, 'vertex_grad': vertices.grad,
                    'param_grads': {n: p.grad for n, p in net.named_parameters()},
                    'types': sorted({type(m).__name__ for m in net.modules()})},
                   Path(out_dir) / f'rank{rank}.pt')
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_sync_batchnorm_synchronises_statistics_and_gradients(tmp_path):
    spawn(_sync_bn_worker, 2, str(tmp_path), timeout=120)
    ranks = [torch.load(tmp_path / f'rank{r}.pt', weights_only=True) for r in range(2)]
    assert 'CPUSyncBatchNorm' in ranks[0]['types'] and 'BatchNorm1d' not in ranks[0]['types']

    # the reference: one process, plain BatchNorm, the union batch
    reference = sync_bn_net()
    reference.train()
    images, vertices = sync_bn_inputs()
    images.requires_grad_(True)
    vertices.requires_grad_(True)
    sync_bn_loss(reference, images, vertices).backward()
    expected = reference.state_dict()

    stats = [k for k in expected if 'running' in k or 'num_batches' in k]
    assert len(stats) == 3 * 4  # one BatchNorm2d and three per-vertex BatchNorm1d
    for key in stats:
        assert torch.equal(ranks[0]['state'][key], ranks[1]['state'][key]), key  # identical on both ranks
        assert torch.allclose(ranks[0]['state'][key].float(), expected[key].float(), rtol=1e-5, atol=1e-6), key
    # the statistics moved away from their initial values (otherwise the check proves nothing)
    assert not torch.allclose(expected['conv.1.running_var'], torch.ones(4))
    for rank, part in enumerate(SHARDS):
        assert torch.allclose(ranks[rank]['image_grad'], images.grad[part], rtol=1e-4, atol=1e-5)
        assert torch.allclose(ranks[rank]['vertex_grad'], vertices.grad[part], rtol=1e-4, atol=1e-5)
    for name, param in reference.named_parameters():  # what DDP sums (then averages) over ranks
        total = ranks[0]['param_grads'][name] + ranks[1]['param_grads'][name]
        assert torch.allclose(total, param.grad, rtol=1e-4, atol=1e-4), name


@pytest.mark.parametrize('training', [True, False])
def test_sync_batchnorm_outside_a_job_is_plain_batchnorm(training):
    net = convert_to_cpu_sync_batchnorm(sync_bn_net()).train(training)
    reference = sync_bn_net().train(training)
    images, vertices = sync_bn_inputs()
    assert torch.allclose(sync_bn_loss(net, images, vertices), sync_bn_loss(reference, images, vertices))
    assert list(net.state_dict()) == list(reference.state_dict())
    for key, value in reference.state_dict().items():
        assert torch.allclose(net.state_dict()[key].float(), value.float(), atol=1e-6), key
    if training:  # the statistics moved, so the comparison above proves they move alike
        assert not torch.allclose(reference.state_dict()['conv.1.running_var'], torch.ones(4))


def test_library_sync_batchnorm_refuses_cpu_modules_clearly():
    """PyTorch's SyncBatchNorm runs on GPUs only: a CPU model gets a message naming the option."""
    with pytest.raises(dist_utils.SyncBatchNormUnavailableError, match='sync_bn: false'):
        dist_utils.convert_sync_batchnorm(sync_bn_net())


def test_a_cpu_job_with_sync_bn_ends_with_the_message(monkeypatch):
    """The command line turns the refusal into one ``ERROR:`` line and exit status 1."""
    from main import train as train_script

    def refusing_main(argv):
        dist_utils.convert_sync_batchnorm(sync_bn_net())

    monkeypatch.setattr(train_script, 'main', refusing_main)
    with pytest.raises(SystemExit) as info:
        train_script.run_cli([])
    assert str(info.value).startswith('ERROR: Synchronised BatchNorm (sync_bn) needs CUDA devices')


def test_running_statistics_are_the_batchnorm_buffers():
    net = sync_bn_net()
    own = {f'{prefix}.{name}' for prefix, module in net.named_modules()
           if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d))
           for name, _ in module.named_buffers(recurse=False)}
    assert len(own) == 2 * 3 and set(dist_utils.running_statistic_names(net)) == own
    assert 'graph.adj' in dict(net.named_buffers())  # a constant buffer, not a statistic
    converted = convert_to_cpu_sync_batchnorm(sync_bn_net())
    assert set(dist_utils.running_statistic_names(converted)) == own
    assert dist_utils.count_batchnorm_layers(net) == 2 and dist_utils.count_batchnorm_layers(converted) == 0


# ------------------------------------------------------------- two processes, end to end
def _train_and_test_worker(rank, world_size, port, train_yaml, out_dir):
    """Train two iterations with DDP, record this rank's losses and final state, then evaluate."""
    os.environ.update(torchrun_env(rank, world_size, port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group('gloo')
    from common.trainer import Trainer
    from main import test as test_script
    from main import train as train_script
    recorded = []
    original_step = Trainer.train_step

    def recording_step(self, *args, **kwargs):
        values = original_step(self, *args, **kwargs)
        recorded.append(values)
        return values

    Trainer.train_step = recording_step
    try:
        trainer = train_script.main(['--cfg', train_yaml], sync_batchnorm_converter=convert_to_cpu_sync_batchnorm)
        torch.save({'state': trainer.model.state_dict(), 'losses': recorded, 'output_dir': cfg.output_dir,
                    'itr_per_epoch': trainer.itr_per_epoch,
                    'types': sorted({type(m).__name__ for m in trainer.model.modules()}),
                    'network': type(trainer.network).__name__},
                   Path(out_dir) / f'train_rank{rank}.pt')
        exp_dir = cfg.output_dir
        tester = test_script.main(['--exp_dir', exp_dir, '--test_epoch', '0', '--cfg', train_yaml])
        torch.save({'batch_ids': tester.batch_ids}, Path(out_dir) / f'test_rank{rank}.pt')
    finally:
        Trainer.train_step = original_step
        torch.distributed.destroy_process_group()


@pytest.fixture(scope='module')
def ddp_run(tiny_schedule_yaml, tmp_path_factory):
    """Two gloo processes, SyncBatchNorm on, batch 2 per process, two iterations, then test.py."""
    folder = tmp_path_factory.mktemp('ddp')
    values = yaml.safe_load(Path(tiny_schedule_yaml).read_text())
    values.update(sync_bn=True, output_root=str(folder / 'runs'))
    train_yaml = write_yaml(folder / 'ddp.yaml', values)
    spawn(_train_and_test_worker, 2, train_yaml, str(folder))
    ranks = [torch.load(folder / f'train_rank{r}.pt', weights_only=True) for r in range(2)]
    tests = [torch.load(folder / f'test_rank{r}.pt', weights_only=True) for r in range(2)]
    return {'ranks': ranks, 'tests': tests, 'exp': Path(ranks[0]['output_dir']), 'yaml': train_yaml,
            'values': values, 'folder': folder}


@pytest.mark.slow
def test_two_processes_train_to_identical_weights(ddp_run):
    ranks = ddp_run['ranks']
    assert ranks[0]['output_dir'] == ranks[1]['output_dir']  # one experiment folder per job
    assert all(r['network'] == 'DistributedDataParallel' for r in ranks)
    assert 'CPUSyncBatchNorm' in ranks[0]['types'] and 'BatchNorm1d' not in ranks[0]['types']
    # 28 synthetic samples: ceil(28 / 2 / 2) = 7 iterations, capped at 2
    assert all(r['itr_per_epoch'] == 2 and len(r['losses']) == 2 for r in ranks)
    assert ranks[0]['losses'] == ranks[1]['losses']  # the logged losses are the mean over ranks
    state0, state1 = ranks[0]['state'], ranks[1]['state']
    assert state0.keys() == state1.keys()
    for key in state0:
        assert torch.equal(state0[key], state1[key]), key
    assert int(state0['backbone.bn1.num_batches_tracked']) == 2

    exp = ddp_run['exp']
    assert sorted(p.name for p in (exp / 'checkpoint').iterdir()) == ['snapshot_0.pth.tar']
    snapshot = torch.load(exp / 'checkpoint' / 'snapshot_0.pth.tar', map_location='cpu', weights_only=True)
    assert set(snapshot) == {'epoch', 'network', 'optimizer', 'scaler', 'config'}
    network = snapshot['network']
    assert len(network) == NUM_STATE_ENTRIES and all(k.startswith('module.') for k in network)
    assert not any(k.startswith('module.module.') for k in network)  # DDP's own prefix is not stored
    for key, value in state0.items():
        assert torch.equal(network['module.' + key], value), key
    assert {float(s['step']) for s in snapshot['optimizer']['state'].values()} == {2.0}

    log = (exp / 'log' / 'train_logs.txt').read_text()
    assert log.count(' itr 0/2:') == 1 and log.count(' itr 1/2:') == 1  # rank 0 alone writes the log
    assert 'Distributed: 2 processes (gloo)' in log and 'batch 2 per process x 2 processes = 4' in log
    assert 'SyncBatchNorm: 63 BatchNorm layers synchronised over 2 processes' in log


@pytest.mark.slow
def test_first_step_equals_one_process_with_the_union_batch(ddp_run, tmp_path, cfg_state):
    """Same global batch (one seeded permutation, per-sample seeding), statistics over all of it
    (SyncBatchNorm), losses averaged over ranks: the first iteration's losses are those of one
    process with batch 2 x 2."""
    from common.trainer import Trainer
    values = dict(ddp_run['values'], train_batch_size=4, sync_bn=False, output_root=str(tmp_path))
    cfg.update(write_yaml(tmp_path / 'single.yaml', values))
    cfg.set_args('0')
    cfg.make_run_dirs()
    trainer = Trainer()
    try:
        trainer.setup()
        trainer.begin_epoch(0)
        inputs, targets, meta_info = next(iter(trainer.batch_generator))
        single = trainer.train_step(inputs, targets, meta_info)
    finally:
        trainer.close()
    distributed = ddp_run['ranks'][0]['losses'][0]
    assert single.keys() == distributed.keys()
    # float32 rounding (statistics summed per rank, then over ranks) grows through the nine graph
    # blocks of a 4-sample batch: measured 1e-4 to 1.4e-3 relative, depending on the run; other
    # batches or per-rank statistics differ by percents.
    for key, value in single.items():
        assert math.isclose(distributed[key], value, rel_tol=3e-3), (key, distributed[key], value)


@pytest.mark.slow
def test_checkpoint_resumes_in_one_process(ddp_run, tmp_path, cfg_state):
    """The 2-process snapshot loads strictly into a single-process model and resumes with its
    optimizer state (a change of world size)."""
    from common.trainer import Trainer
    values = dict(ddp_run['values'], sync_bn=False, output_root=str(tmp_path), end_epoch=2)
    cfg.update(write_yaml(tmp_path / 'resume.yaml', values))
    cfg.set_args('0', continue_train=True, exp_dir=str(ddp_run['exp']))
    cfg.make_run_dirs()
    trainer = Trainer()
    trainer.vertex_num, trainer.joint_num = 6890, 30
    try:
        trainer.make_model()
    finally:
        trainer.close()
    assert trainer.start_epoch == 1
    assert not isinstance(trainer.network, torch.nn.parallel.DistributedDataParallel)
    expected = ddp_run['ranks'][0]['state']
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert {float(s['step']) for s in trainer.optimizer.state_dict()['state'].values()} == {2.0}


def assert_close_metrics(got, expected, path='metrics'):
    """Nested metric dicts: same keys, numbers within float32 rounding."""
    assert isinstance(got, dict) and got.keys() == expected.keys(), path
    for key, value in expected.items():
        if isinstance(value, dict):
            assert_close_metrics(got[key], value, f'{path}.{key}')
        else:
            assert math.isclose(got[key], value, rel_tol=1e-5), f'{path}.{key}'


@pytest.mark.slow
def test_two_process_evaluation_equals_one_process(ddp_run):
    from main.test import main
    exp = ddp_run['exp']
    result = exp / 'result'
    distributed_metrics = json.loads((result / 'eval_PW3D_snapshot_0.json').read_text())
    with np.load(result / 'predictions_PW3D_snapshot_0.npz') as npz:
        distributed_predictions = dict(npz)
    # 10 synthetic 3DPW persons in batches of 8: rank 0 gets batch 0, rank 1 batch 1
    assert [t['batch_ids'] for t in ddp_run['tests']] == [[0], [1]]
    (result / 'eval_PW3D_snapshot_0.json').unlink()
    run_in_process(main, ['--gpu', '0', '--exp_dir', str(exp), '--test_epoch', '0', '--cfg', ddp_run['yaml']])
    single_metrics = json.loads((result / 'eval_PW3D_snapshot_0.json').read_text())
    with np.load(result / 'predictions_PW3D_snapshot_0.npz') as npz:
        single_predictions = dict(npz)
    assert_close_metrics(distributed_metrics, single_metrics)
    assert distributed_metrics['num_samples'] == 10
    assert distributed_predictions.keys() == single_predictions.keys()
    assert np.array_equal(distributed_predictions['sample_idx'], np.arange(10))
    for key, value in single_predictions.items():
        assert np.allclose(distributed_predictions[key], value, rtol=1e-5, atol=1e-6), key
    log = (exp / 'log' / 'test_logs.txt').read_text()
    assert 'shared by 2 processes' in log


# ----------------------------------------------------------------------- torchrun, failing
FAILING_ENTRY = '''
import os, runpy, sys
sys.path.insert(0, {root!r})
from common.trainer import Trainer
if os.environ['RANK'] == '1':
    original = Trainer.train_step
    def failing_step(self, inputs, targets, meta_info, epoch=0, itr=0):
        if itr == 1:
            raise FileNotFoundError('Image not found: /data/MSCOCO/images/train2017/000000000042.jpg '
                                    '(simulated on rank 1)')
        return original(self, inputs, targets, meta_info, epoch, itr)
    Trainer.train_step = failing_step
sys.argv = [{train!r}] + sys.argv[1:]
runpy.run_path({train!r}, run_name='__main__')
'''


@pytest.mark.slow
def test_a_failing_rank_stops_the_whole_job(tiny_schedule_yaml, tmp_path):
    """torchrun with two gloo ranks; rank 1 fails in its second iteration while rank 0 waits in
    a collective: the job ends non-zero, with the error shown, instead of hanging (a job still
    running after 120 s fails the test)."""
    values = yaml.safe_load(Path(tiny_schedule_yaml).read_text())
    values['output_root'] = str(tmp_path / 'runs')
    train_yaml = write_yaml(tmp_path / 'fail.yaml', values)
    entry = tmp_path / 'failing_train.py'
    entry.write_text(FAILING_ENTRY.format(root=str(ROOT), train=str(ROOT / 'main' / 'train.py')))
    command = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
               f'--master_port={free_port()}', '--monitor_interval=0.2', str(entry), '--cfg', train_yaml]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    out = run_command(command, timeout=120, cwd=ROOT, env=env)
    text = out.stdout + out.stderr
    assert out.returncode != 0, text[-3000:]
    assert 'ERROR [rank 1/2]: Image not found: /data/MSCOCO/images/train2017/000000000042.jpg' in text, text[-3000:]
    # rank 0 got through the first iteration, then the job stopped before any snapshot
    runs = list((tmp_path / 'runs').iterdir())
    assert len(runs) == 1 and not list((runs[0] / 'checkpoint').iterdir())
    assert ' itr 0/2:' in (runs[0] / 'log' / 'train_logs.txt').read_text()


# --------------------------------------------------------------------------- CUDA / NCCL
@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU (NCCL)')
def test_torchrun_on_gpus_with_nccl_and_amp(tiny_schedule_yaml, tmp_path):
    nproc = min(2, torch.cuda.device_count())
    values = yaml.safe_load(Path(tiny_schedule_yaml).read_text())
    values.update(output_root=str(tmp_path / 'runs'), sync_bn=nproc > 1)
    train_yaml = write_yaml(tmp_path / 'gpu.yaml', values)
    command = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={nproc}',
               f'--master_port={free_port()}', str(ROOT / 'main' / 'train.py'), '--amp', '--cfg', train_yaml]
    out = run_command(command, timeout=400, cwd=ROOT)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    exp = next((tmp_path / 'runs').iterdir())
    log = (exp / 'log' / 'train_logs.txt').read_text()
    assert f'Distributed: {nproc} processes (nccl)' in log and log.count(' itr 1/2:') == 1
    snapshot = torch.load(exp / 'checkpoint' / 'snapshot_0.pth.tar', map_location='cpu', weights_only=True)
    assert len(snapshot['network']) == NUM_STATE_ENTRIES and snapshot['scaler']  # AMP was on
    command = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={nproc}',
               f'--master_port={free_port()}', str(ROOT / 'main' / 'test.py'), '--exp_dir', str(exp),
               '--test_epoch', '0', '--cfg', train_yaml]
    out = run_command(command, timeout=300, cwd=ROOT)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert (exp / 'result' / 'eval_PW3D_snapshot_0.json').is_file()
