"""The training and test drivers under the original code base's module name.

``from common.base import Trainer, Tester`` keeps working; the drivers live in
``common/trainer.py`` and ``common/tester.py``, the seeds in ``common/seeding.py``,
resume and warm start next to the checkpoint files in ``common/utils/checkpoint.py``,
and joining a torchrun job in ``common/utils/cli.py``.
"""
from common.seeding import derive_seed, seed_everything, seed_worker, set_dataset_epoch  # noqa: F401
from common.tester import Tester, json_safe  # noqa: F401
from common.trainer import NonFiniteLossError, Trainer  # noqa: F401
from common.utils.batch import batch_size_of, chunk_sizes, split_batch  # noqa: F401
from common.utils.cli import init_distributed_from_env, make_shared_run_dirs  # noqa: F401
