"""Built-in 2D pose estimator: a person detector and a top-down pose network, run through
the optional ``rtmlib`` package (ONNX models on onnxruntime).

Nothing is downloaded: the two ONNX files are given by path, or found in rtmlib's own cache
(``$TORCH_HOME/hub/checkpoints`` when ``TORCH_HOME`` is set, else
``${XDG_CACHE_HOME:-~/.cache}/rtmlib/hub/checkpoints``), where rtmlib unpacks the models of
its ``Wholebody`` / ``Body`` solutions as ``<archive name>.onnx``.  Any YOLOX detector export
and any RTMPose/RTMW SimCC export whose first 17 keypoints are COCO-17 (body: 17, halpe: 26,
whole-body: 133) fit; their input sizes are read from the ONNX files.

Output per picture: ``(N, 17, 3)`` ``[x, y, score]`` in image pixels, COCO-17 order (the
demo maps it exactly like a COCO keypoint-results entry).  rtmlib itself is touched only in
:func:`_rtmlib_tools`, which builds its ``YOLOX`` and ``RTMPose`` tools; everything they run
goes through onnxruntime sessions, which is what the tests drive with small ONNX models.
"""
import os
from pathlib import Path

import numpy as np

from common.errors import UserError

COCO17_JOINTS = 17
DETECTOR_INPUT_HW = (640, 640)      # rtmlib's YOLOX default, used when the ONNX input size is dynamic
POSE_INPUT_HW = (256, 192)          # rtmlib's RTMPose default (W 192, H 256), likewise
SOLUTIONS = ('Wholebody', 'Body')   # rtmlib solutions whose cached models are looked for, in order
MODES = ('balanced', 'performance', 'lightweight')
INSTALL_HINT = ('pip install --no-deps rtmlib && pip install onnxruntime (onnxruntime-gpu for CUDA; --no-deps keeps '
                'the headless OpenCV)')


class EstimatorUnavailable(UserError):
    """The optional estimator cannot run: rtmlib / onnxruntime missing, or no model files."""


def rtmlib_cache_dir():
    """rtmlib's download folder (its rule: ``TORCH_HOME`` wins, else the XDG cache)."""
    base = os.getenv('TORCH_HOME', os.path.join(os.getenv('XDG_CACHE_HOME', '~/.cache'), 'rtmlib'))
    return Path(os.path.expanduser(base)) / 'hub' / 'checkpoints'


def _import_rtmlib():
    try:
        import onnxruntime  # noqa: F401  (rtmlib imports it only when a model is loaded)
        import rtmlib
    except ImportError as exc:
        raise EstimatorUnavailable(
            f"The built-in 2D pose estimator needs the optional packages rtmlib and onnxruntime ({exc}): "
            f"{INSTALL_HINT}; or give poses with --pose (OpenPose folder/file or COCO results).") from exc
    return rtmlib


def _cached_name(url):
    """The ``.onnx`` name rtmlib gives a model archive it downloaded (text before the first dot)."""
    return Path(url).name.split('.')[0] + '.onnx'


def find_cached_models(rtmlib, cache_dir=None):
    """(detector, pose model) paths of the first rtmlib solution/mode found complete in the
    cache, or ``(None, None)``; also returns the names looked for, for the error message."""
    cache_dir = Path(cache_dir) if cache_dir else rtmlib_cache_dir()
    wanted = []
    for solution in SOLUTIONS:
        table = getattr(getattr(rtmlib, solution, None), 'MODE', {})
        for mode in MODES:
            if mode in table:
                det, pose = cache_dir / _cached_name(table[mode]['det']), cache_dir / _cached_name(table[mode]['pose'])
                wanted.append((det, pose, table[mode]))
                if det.is_file() and pose.is_file():
                    return det, pose, wanted
    return None, None, wanted


def resolve_model_files(rtmlib, det_model=None, pose_model=None, cache_dir=None):
    """The detector and pose ONNX paths: those given (which must exist), else rtmlib's cache.

    Raises :class:`EstimatorUnavailable` naming the missing files, where they go and where
    rtmlib's model table says they come from.
    """
    for flag, given in (('--det_model', det_model), ('--pose_model', pose_model)):
        if given and not Path(given).is_file():
            raise EstimatorUnavailable(f"{flag} {given}: no such file (an ONNX model file).")
    if det_model and pose_model:
        return Path(det_model), Path(pose_model)
    det, pose, wanted = find_cached_models(rtmlib, cache_dir)
    if det is not None:
        return Path(det_model or det), Path(pose_model or pose)
    where = Path(cache_dir) if cache_dir else rtmlib_cache_dir()
    example = wanted[0] if wanted else None
    hint = (f"e.g. {example[0].name} and {example[1].name} (end2end.onnx of {example[2]['det']} and "
            f"{example[2]['pose']}, renamed)" if example else "a YOLOX detector and an RTMPose/RTMW model")
    raise EstimatorUnavailable(
        f"The built-in 2D pose estimator needs a detector and a pose ONNX file: pass --det_model and "
        f"--pose_model, or put {hint} into {where}; or give poses with --pose.")


def _static_hw(session, default):
    """(H, W) of an onnxruntime session's first input when fixed in the file, else ``default``."""
    shape = session.get_inputs()[0].shape
    if len(shape) == 4 and all(isinstance(v, int) and v > 0 for v in shape[2:]):
        return int(shape[2]), int(shape[3])
    return default


def _rtmlib_tools(rtmlib, det_path, pose_path, device):
    """rtmlib's ``YOLOX`` and ``RTMPose`` on onnxruntime for two local ONNX files.

    Their input sizes follow the files (rtmlib's ``model_input_size`` is (H, W) for YOLOX and
    (W, H) for RTMPose).
    """
    detector = rtmlib.YOLOX(str(det_path), model_input_size=DETECTOR_INPUT_HW, backend='onnxruntime', device=device)
    detector.model_input_size = _static_hw(detector.session, DETECTOR_INPUT_HW)
    pose = rtmlib.RTMPose(str(pose_path), model_input_size=POSE_INPUT_HW[::-1], backend='onnxruntime',
                          device=device)
    pose.model_input_size = _static_hw(pose.session, POSE_INPUT_HW)[::-1]
    return detector, pose


def onnx_device(torch_device):
    """rtmlib's device name for onnxruntime: 'cuda:<i>' when the demo runs on CUDA and
    onnxruntime has the CUDA provider, else 'cpu'.

    torch_device: a ``torch.device`` or its name ('cpu', 'cuda', 'cuda:1'); a CUDA device
    without an index is device 0.
    """
    import onnxruntime
    import torch
    device = torch.device(torch_device)
    if device.type == 'cuda' and 'CUDAExecutionProvider' in onnxruntime.get_available_providers():
        return f'cuda:{device.index or 0}'
    return 'cpu'


class Rtmlib2DPose:
    """Detector + top-down pose network; ``__call__(bgr uint8 (H, W, 3)) -> (N, 17, 3)``.

    The picture is BGR, as OpenCV decodes it and as rtmlib's tools read it.
    """

    def __init__(self, det_path, pose_path, device='cpu', rtmlib=None):
        rtmlib = rtmlib or _import_rtmlib()
        self.det_path, self.pose_path = Path(det_path), Path(pose_path)
        try:
            self.detector, self.pose = _rtmlib_tools(rtmlib, self.det_path, self.pose_path, device)
        except Exception as exc:   # onnxruntime reports a broken file with its own exception types
            raise EstimatorUnavailable(f"Cannot load the estimator's ONNX files {self.det_path} / "
                                       f"{self.pose_path}: {exc}") from exc

    def describe(self):
        return f'rtmlib: detector {self.det_path.name}, pose {self.pose_path.name}'

    def __call__(self, bgr):
        bgr = np.ascontiguousarray(bgr, dtype=np.uint8)     # no copy for a decoded picture
        boxes = np.asarray(self.detector(bgr), np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            # RTMPose treats "no boxes" as one box over the whole picture: nobody here.
            return np.zeros((0, COCO17_JOINTS, 3))
        keypoints, scores = self.pose(bgr, bboxes=list(boxes))
        keypoints, scores = np.asarray(keypoints, np.float64), np.asarray(scores, np.float64)
        if keypoints.shape[1] < COCO17_JOINTS:
            raise EstimatorUnavailable(f"The pose model {self.pose_path} gives {keypoints.shape[1]} keypoints; "
                                       f"the demo needs at least the {COCO17_JOINTS} COCO body keypoints first.")
        return np.concatenate([keypoints[:, :COCO17_JOINTS], scores[:, :COCO17_JOINTS, None]], axis=2)


def load_estimator(det_model=None, pose_model=None, torch_device='cpu', cache_dir=None):
    """The estimator from given or cached ONNX files (:class:`EstimatorUnavailable` if it cannot run)."""
    rtmlib = _import_rtmlib()
    det_path, pose_path = resolve_model_files(rtmlib, det_model, pose_model, cache_dir)
    return Rtmlib2DPose(det_path, pose_path, onnx_device(torch_device), rtmlib=rtmlib)
