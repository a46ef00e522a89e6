"""Data-loading speed (``tool/benchmark.py --mode data``), at the synthetic tree's small images
and at each dataset's real resolution.

For each size (``--sizes small,full``; the trees come from ``--data`` / ``--data-full`` or are
generated into a temporary folder, the full-size one with ``make_synthetic_data --full-size``):

* ``<size>/crop whole-image`` and ``<size>/crop region``: ms per image to read one image of
  each dataset and cut an augmented (mirrored) 256x256 crop, by converting and mirroring the
  whole image (the straightforward path) and by converting only the pixels the warp reads (the
  loaders' path; same patch, bit for bit).  The two alternate run by run (3 x ``--runs``), so a
  busy machine slows both alike; compare their ratio rather than the absolute numbers;
* ``<size>/<Dataset> <split>``: ms per ``__getitem__`` of each train and test loader (one
  process, one thread, seeded draws; a run goes once over the small dataset);
* ``<size>/stream <k> worker(s)``: the training mixture (``trainset_3d`` + ``trainset_2d``
  balanced as in training) through a torch ``DataLoader`` with 1 and ``--workers`` workers
  (default: the CPUs this process may use), batches of ``--batch`` (default the configured
  ``train_batch_size``) drawn with replacement; samples/s over ``--stream-batches`` batches
  per worker after one warm-up batch per worker (worker start-up excluded).

Rows follow the benchmark contract (``median_ms``, ``min_ms``, ``max_ms``, ``runs``; ms per
sample); stream rows add ``samples_per_s``.
"""
import math
import os
import time
from pathlib import Path

import numpy as np

from main.config import cfg
from tool.bench.timing import time_alternating, time_callable

TRAIN_LOADERS = (('Human36M', 'train'), ('MuCo', 'train'), ('MSCOCO', 'train'), ('MPII', 'train'))
TEST_LOADERS = (('PW3D', 'test'), ('Human36M', 'test'), ('MSCOCO', 'val'))
SIZES = ('small', 'full')
# The authors' loaders on a comparable small synthetic tree, ms per sample on a 2-core CPU
# (orientation only).
AUTHORS_DATA_MS = {'Human36M train': '25', 'MuCo train': '67', 'MSCOCO train': '25', 'MPII train': '25',
                   'PW3D test': '25'}
# One image per dataset for the crop rows: (glob under the data root).
CROP_IMAGES = ('PW3D/data/imageFiles/*/*.jpg', 'Human36M/images/*/*.jpg', 'MuCo/data/*/*.jpg',
               'MSCOCO/images/train2017/*.jpg', 'MPII/data/images/*.jpg')


def usable_cpus():
    """CPUs this process may run on (affinity), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def data_tree(size, given, workdir):
    """Root of the ``size`` tree: ``given`` if set, else generated into ``workdir`` (printed)."""
    if given:
        return Path(given)
    from tool.synthetic.tree import make_synthetic_data
    root = Path(workdir) / f'data_{size}'
    start = time.perf_counter()
    make_synthetic_data(root, cfg.smpl_model_dir, seed=0, full_size=size == 'full')
    print(f'{size} synthetic data tree generated in {root} ({time.perf_counter() - start:.0f} s)')
    return root


# ----------------------------------------------------------------------------- crop: before / after
def whole_image_generate_patch(cvimg, bbox, scale, rot, do_flip, out_shape):
    """``generate_patch_image`` done the straightforward way: the whole float RGB image mirrored,
    then warped.  Returns ``(patch float32, img2bb, bb2img)`` as the library function."""
    import cv2
    from common.utils.preprocessing import gen_trans_from_patch_cv
    img = np.asarray(cvimg)
    c_x, c_y = float(bbox[0]) + 0.5 * float(bbox[2]), float(bbox[1]) + 0.5 * float(bbox[3])
    if do_flip:
        img = cv2.flip(np.ascontiguousarray(img), 1)   # OpenCV's mirror: ~10x faster than NumPy's reversed copy
        c_x = img.shape[1] - c_x - 1
    out_h, out_w = int(out_shape[0]), int(out_shape[1])
    args = (c_x, c_y, float(bbox[2]), float(bbox[3]), out_w, out_h, scale, rot)
    patch = cv2.warpAffine(img, gen_trans_from_patch_cv(*args), (out_w, out_h), flags=cv2.INTER_LINEAR)
    return patch.astype(np.float32), gen_trans_from_patch_cv(*args), gen_trans_from_patch_cv(*args, inv=True)


def crop_functions(root):
    """``{'crop whole-image': f, 'crop region': g}``: each reads the images of ``CROP_IMAGES`` and cuts
    a mirrored crop of a centred box a third of the image high; the patches are checked equal."""
    from common.utils.preprocessing import generate_patch_image, load_img, read_image
    paths = [sorted(Path(root).glob(pattern))[0] for pattern in CROP_IMAGES if list(Path(root).glob(pattern))]
    boxes = []
    for path in paths:
        height, width = read_image(path).shape[:2]
        side = height / 3
        boxes.append(np.array([width / 2 - side / 2, height / 2 - side / 2, side, side], np.float32))

    def whole():
        return [whole_image_generate_patch(load_img(p), b, 1.0, 0.0, True, (256, 256))[0]
                for p, b in zip(paths, boxes)]

    def region():
        return [generate_patch_image(read_image(p), b, 1.0, 0.0, True, (256, 256))[0] for p, b in zip(paths, boxes)]

    if any(a.tobytes() != b.tobytes() for a, b in zip(whole(), region())):
        raise RuntimeError('the region crop differs from the whole-image crop')
    return {'crop whole-image': whole, 'crop region': region}, len(paths)


# ----------------------------------------------------------------------------- loaders
def loader_rows(runs, warmup):
    """ms per sample of each train and test loader on the configured tree (one process, one thread)."""
    import torch
    import torchvision.transforms as T
    from data.registry import dataset_class
    rows = {}
    for name, split in TRAIN_LOADERS + TEST_LOADERS:
        dataset = dataset_class(name)(T.ToTensor(), split)
        count = len(dataset)

        def one_pass(dataset=dataset, count=count):
            for index in range(count):
                dataset[index]

        stats = time_callable(one_pass, runs, warmup, torch.device('cpu'))
        rows[f'{name} {split}'] = {**per_item(stats, count), 'samples': count}
    return rows


def per_item(stats, count):
    """Timing statistics of a pass over ``count`` items -> per item."""
    return {key: (value / count if key.endswith('_ms') else value) for key, value in stats.items()}


def stream_rate(workers, batch, batches_per_worker):
    """Samples/s of the training mixture through a DataLoader with ``workers`` workers.

    One warm-up batch per worker (start-up, first decode), then ``batches_per_worker`` batches per
    worker timed.  Returns the row (``median_ms`` = ms per sample; ``samples_per_s``).
    """
    import torch
    import torchvision.transforms as T
    from common.seeding import seed_worker
    from common.trainer import build_training_set
    dataset, _ = build_training_set(cfg.trainset_3d, cfg.trainset_2d, T.ToTensor())
    warm = max(workers, 1)
    total = warm + batches_per_worker * warm
    generator = torch.Generator().manual_seed(0)
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=total * batch, generator=generator)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                                         worker_init_fn=seed_worker, generator=generator)
    stamps = []
    for _ in loader:
        stamps.append(time.perf_counter())
    timed = stamps[warm:]
    seconds = timed[-1] - stamps[warm - 1]
    rate = len(timed) * batch / seconds
    gaps = np.diff([stamps[warm - 1]] + timed) * 1000 / batch
    return {'median_ms': 1000 / rate, 'min_ms': float(gaps.min()), 'max_ms': float(gaps.max()),
            'runs': len(timed), 'samples_per_s': rate, 'workers': workers, 'batch': batch}


# ----------------------------------------------------------------------------- the mode
def benchmark_data(args):
    """All rows for each size in ``args.sizes``; returns ``(results, extra)`` for the report."""
    import torch
    torch.set_num_threads(1)
    cfg.seed = 0
    workers = args.workers or usable_cpus()
    batch = args.batch
    results = {}
    for size in args.sizes.split(','):
        if size not in SIZES:
            raise SystemExit(f"--sizes: choose from {','.join(SIZES)}, got {size!r}")
        cfg.data_dir = str(data_tree(size, args.data if size == 'small' else args.data_full, args.workdir))
        crops, count = crop_functions(cfg.data_dir)
        # The crop rows are cheap and their ratio is the point: three times the runs against the noise.
        for name, stats in time_alternating(crops, 3 * args.runs, args.warmup, torch.device('cpu')).items():
            results[f'{size}/{name}'] = {**per_item(stats, count), 'samples': count}
        for name, row in loader_rows(args.runs, args.warmup).items():
            results[f'{size}/{name}'] = row
        for count in sorted({1, workers}):
            label = f'{size}/stream {count} worker' + ('s' if count > 1 else '')
            results[label] = stream_rate(count, batch, args.stream_batches)
    return results, {'workers': workers, 'stream_batch': batch, 'cpus': usable_cpus()}


def print_data_table(report):
    """Plain table: ms per sample per row, samples/s for the stream rows, crop ratio per size."""
    results = report['results']
    print(f"device: {report['device']}   torch {report['torch']}   CPUs usable: {report.get('cpus')}   "
          f"stream batch {report.get('stream_batch')}")
    print(f"{'name':<34}{'median ms':>11}{'min ms':>9}{'max ms':>9}{'runs':>6}{'samples/s':>11}{'authors ms*':>13}")
    for name, row in results.items():
        size, _, short = name.partition('/')
        authors = AUTHORS_DATA_MS.get(short, '-') if size == 'small' else '-'
        rate = f"{row['samples_per_s']:.1f}" if 'samples_per_s' in row else '-'
        print(f"{name:<34}{row['median_ms']:>11.1f}{row['min_ms']:>9.1f}{row['max_ms']:>9.1f}{row['runs']:>6}"
              f"{rate:>11}{authors:>13}")
    for size in SIZES:
        whole, region = results.get(f'{size}/crop whole-image'), results.get(f'{size}/crop region')
        if whole and region:
            print(f"{size}: region crop takes {region['median_ms'] / whole['median_ms']:.2f}x the time of the "
                  f"whole-image crop (read + decode + crop, same patch)")
    print("* the authors' loaders on a small synthetic tree, 2-core CPU, for orientation only")
    one_worker = results.get('full/stream 1 worker')
    if report.get('gpu_samples_per_s') and one_worker:
        gpu_rate = report['gpu_samples_per_s']
        print(f"one GPU at {gpu_rate:g} samples/s needs ceil({gpu_rate:g} / {one_worker['samples_per_s']:.1f}) = "
              f"{workers_needed(gpu_rate, one_worker['samples_per_s'])} workers at the full-size per-worker rate")


def workers_needed(gpu_samples_per_s, worker_samples_per_s):
    """DataLoader workers that keep one GPU fed: ceil(GPU rate / one worker's rate)."""
    return math.ceil(gpu_samples_per_s / worker_samples_per_s)
