"""What a training run and a test run share: the logger, the device and the timers.

:class:`Runner` picks the device once (``--gpu`` ids with CPU fallback; under torchrun
one device per process), logs in the original's format to ``<log_dir>/<log_name>``
on rank 0 (other ranks only print errors), and wraps a bare model for several CUDA
devices of one process (DataParallel).  It takes every setting as an argument; the
trainer and the tester pass the run's configuration in.
"""
import torch

from common.logger import ColorLogger
from common.timer import Timer
from common.utils import distributed as dist_utils
from common.utils.device import select_device, select_rank_device


class Runner:
    """Logger, device and timers of a run.

    ``log_dir``: folder of the log file ``log_name``; ``gpu_ids``: the ``--gpu`` string, or
    None for the first CUDA device, else the CPU (under torchrun the id of this process is
    picked by ``LOCAL_RANK``); ``deterministic``: a seeded run asks cuDNN for repeatable
    kernels instead of benchmarking them.
    """

    log_name = 'train_logs.txt'

    def __init__(self, log_dir, gpu_ids, deterministic=False):
        self.distributed = dist_utils.is_distributed()
        self.dist = dist_utils.local_info()
        self.is_main_process = self.dist.is_main
        if self.is_main_process:
            self.logger = ColorLogger(log_dir, self.log_name, console=True)
        else:
            self.logger = dist_utils.RankLogger(self.dist.rank)
        self.tot_timer = Timer()
        self.gpu_timer = Timer()
        self.read_timer = Timer()
        if self.distributed:
            self.device_setup = select_rank_device(gpu_ids, self.dist.local_rank)
        else:
            self.device_setup = select_device(gpu_ids)
        self.device = self.device_setup.device
        if self.is_main_process:
            for message in self.device_setup.notes:
                self.logger.info(message)
            for message in self.device_setup.warnings:
                self.logger.warning(message)
        if self.distributed:
            self.logger.info(f'>>> Distributed: {self.dist.world_size} processes '
                             f'({torch.distributed.get_backend()}), {self.dist.local_world_size} per node; '
                             f'rank 0 on {self.device}')
        if self.device_setup.is_cuda:
            torch.cuda.set_device(self.device)  # the default for any code that says just 'cuda'
            if not self.distributed:
                self.logger.info(f'>>> Using GPU: {",".join(map(str, self.device_setup.device_ids))}')
            # The original's speed setting; a seeded run trades it for repeatability.
            torch.backends.cudnn.benchmark = not deterministic
            torch.backends.cudnn.deterministic = bool(deterministic)

    def wrap_for_devices(self, model):
        """The bare model for one device or the CPU; ``DataParallel`` over several CUDA ids
        (as the original), with the outputs gathered on the first."""
        if len(self.device_setup.device_ids) > 1:
            return torch.nn.DataParallel(model, device_ids=self.device_setup.device_ids,
                                         output_device=self.device_setup.device_ids[0])
        return model

    def close(self):
        self.logger.close()
