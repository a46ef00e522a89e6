"""3DPW evaluation sets (docs/METHOD.md, "Data on disk", "Evaluation").

``PW3D(transform, data_split, options=None, subset=None)`` ignores ``data_split``; ``subset``
selects the evaluation set (None: ``'crowd'`` with ``options.crowd``, else ``'test'``):

* ``'test'`` (3DPW): the ``test`` split, OpenPose inputs;
* ``'crowd'`` (3DPW-Crowd): the ``validation`` split restricted to ``courtyard_hug_00`` and
  ``courtyard_dancing_00`` with HigherHRNet inputs (OpenPose where an annotation has no
  HigherHRNet entry);
* ``'OC'`` (3DPW-OC, ROMP's object-occluded subset): the sequences of ``OC_SEQUENCE_STEMS``;
* ``'PC'`` (3DPW-PC, ROMP's person-crowded subset): the frames ``PC_FRAME_RANGES`` of six
  sequences.

OC and PC take their people from all three splits (train, validation, test), as ROMP does,
with OpenPose inputs: they read ``3DPW_latest_{train,validation,test}.json``, or instead one
pre-built ``3DPW_oc.json`` / ``3DPW_pc.json`` in the same folder when it exists (the subset
rule is applied to it too).  Annotation ids restart in each split file, so they are unique
only within a split.  Each sample is one annotated person:

* ``inputs``: ``img`` (3,256,256) float32 RGB in [0,1], ``joints`` (30,3) float32
  ``[x_hm, y_hm, score]``, ``joints_mask`` (30,1) float32;
* ``targets``: ``smpl_mesh_cam`` (6890,3) float32, GT mesh of the gendered layer, camera
  frame, metres;
* ``meta_info``: ``bb2img_trans``/``img2bb_trans`` (2,3) float32, ``bbox``/``tight_bbox``
  (4,) float32, ``aid`` int.

Evaluation: ``evaluate`` -> per-sample MPJPE / PA-MPJPE on the 14 H36M evaluation
joints and MPVPE on pelvis-centred meshes (mm); ``summarize`` -> means and per-sequence means;
``print_eval_result`` prints the original's three lines.  With ``options.vis`` / ``options.render``,
``evaluate`` also writes each sample's pictures and meshes into ``options.vis_dir``
(``visualize_sample``).
"""
import os.path as osp
import warnings
from functools import partial

import numpy as np
import torch

from common.errors import DataError
from common.utils.joints import COCO17, COCO19, H36M17, H36M_EVAL_JOINTS, OPENPOSE18, OPENPOSE19, SMPL30, \
    add_neck, add_pelvis, transfer_joints
from common.utils.metrics import joint_error, regress_joints, vertex_error
from common.utils.preprocessing import (crop_for_test, gen_trans_from_patch_cv, get_bbox, in_bounds_mask,
                                        input_aspect_ratio, load_img, process_bbox, read_image)
from common.utils.transforms import cam2pixel, denorm_joints
from data.annotations import (AnnotationError, check_finite, coco_file, finite_array, h36m_regressor_file,
                              image_folder, json_list_file, json_object_file, load_h36m_regressor, read_coco,
                              read_json, read_json_object, require_fields)
from data.dataset import SeededDataset, body_model, resolve_data_options
from data.sample_steps import input_image

CROWD_SEQUENCES = ('courtyard_hug_00', 'courtyard_dancing_00')
# ROMP's 3DPW-PC: person-crowded frames [first, stop) of the frame number (image_<number>.jpg).
PC_FRAME_RANGES = {
    'courtyard_basketball_00': (200, 280), 'courtyard_captureSelfies_00': (500, 600),
    'courtyard_dancing_00': (60, 370), 'courtyard_dancing_01': (60, 270),
    'courtyard_hug_00': (100, 500), 'downtown_bus_00': (1620, 1900)}
# ROMP's 3DPW-OC: object-occluded sequences, named without their ``_NN`` take number.
OC_SEQUENCE_STEMS = (
    'courtyard_backpack', 'courtyard_basketball', 'courtyard_bodyScannerMotions', 'courtyard_box',
    'courtyard_golf', 'courtyard_jacket', 'courtyard_laceShoe', 'downtown_stairs', 'flat_guitar',
    'flat_packBags', 'outdoors_climbing', 'outdoors_crosscountry', 'outdoors_fencing', 'outdoors_freestyle',
    'outdoors_golf', 'outdoors_parcours', 'outdoors_slalom')
SUBSETS = ('test', 'crowd', 'OC', 'PC')
ALL_SPLITS = ('train', 'validation', 'test')
PREBUILT_SUBSET_FILES = {'OC': '3DPW_oc.json', 'PC': '3DPW_pc.json'}
POSE_SCORE_THR = 0.05
MIN_INPUT_BOX_SIZE = 1.0  # pixels; a smaller processed box means the confident joints coincide
METRIC_KEYS = ('mpjpe', 'pa_mpjpe', 'mpvpe')

LAYOUT_HINT = (
    "data_dir/PW3D/data/3DPW_latest_test.json (default), 3DPW_latest_validation.json and "
    "3DPW_validation_crowd_hhrnet_result.json (crowd=True), 3DPW_latest_{train,validation,test}.json "
    "(PW3D-OC, PW3D-PC; or a pre-built 3DPW_oc.json / 3DPW_pc.json), images under "
    "data_dir/PW3D/data/imageFiles/<sequence>/<file_name>; RootNet boxes (use_gt_info=False) in "
    "data_dir/PW3D/rootnet_output/bbox_root_pw3d_output.json. The converted annotations come from the "
    "3DCrowdNet/Pose2Mesh data release; `python tool/make_synthetic_data.py --root DIR --smpl DIR` writes a "
    "synthetic stand-in.")

IMAGES_SOURCE = "the 3DPW website, https://virtualhumans.mpi-inf.mpg.de/3DPW/ (imageFiles.zip)"
# The converted annotations: the data instructions of the 3DCrowdNet release
# (github.com/hongsukchoi/3DCrowdNet_RELEASE, assets/directory.md).
SOURCE = ("the 3DPW annotations converted by the Pose2Mesh/3DCrowdNet authors "
          "(https://drive.google.com/drive/folders/1_wi6G6h-JFfb9HGccysJwI02zc_S2DVJ), linked from 3DCrowdNet's "
          "assets/directory.md")
ROOTNET_SOURCE = ("RootNet's 3DPW test output (github.com/mks0601/3DMPPE_ROOTNET_RELEASE); only needed with "
                  "use_gt_info: False")

IMAGE_FIELDS = ('file_name', 'sequence', 'width', 'height', 'cam_param')


def image_path(img_dir, img):
    """``imageFiles/<sequence>/<file_name>`` of one image record."""
    return osp.join(img_dir, img['sequence'], img['file_name'])


def resolve_subset(options, subset=None):
    """The evaluation subset ``PW3D(..., subset)`` reads: ``subset``, or with None ``'crowd'``
    when ``options.crowd`` is set and ``'test'`` otherwise."""
    if subset is None:
        subset = 'crowd' if options.crowd else 'test'
    if subset not in SUBSETS:
        raise ValueError(f"Unknown 3DPW subset {subset!r}; expected one of {SUBSETS}.")
    return subset


def _annotation_files(data_path, subset):
    """``{role: (path, split)}`` of the annotation files of ``subset``: one split file for
    'test' and 'crowd'; for 'OC' / 'PC' the pre-built subset file when it exists, else the
    three split files (roles 'annotations_<split>')."""
    if subset in PREBUILT_SUBSET_FILES:
        prebuilt = osp.join(data_path, PREBUILT_SUBSET_FILES[subset])
        if osp.isfile(prebuilt):
            return {'annotations': (prebuilt, f'pre-built 3DPW-{subset}')}
        return {f'annotations_{split}': (osp.join(data_path, f'3DPW_latest_{split}.json'), split)
                for split in ALL_SPLITS}
    split = 'validation' if subset == 'crowd' else 'test'
    return {'annotations': (osp.join(data_path, f'3DPW_latest_{split}.json'), split)}


def data_files(options, data_split='test', subset=None):
    """``{role: RequiredFile}`` of everything ``PW3D(transform, data_split, options, subset)`` reads.

    ``data_split`` is ignored, as by the class.  Always 'images', 'h36m_regressor' and the
    annotation files of the subset (:func:`_annotation_files`); 'crowd' adds 'crowd_poses';
    'test' with ``use_gt_info=False`` adds 'rootnet'.
    """
    subset = resolve_subset(options, subset)
    data_path = osp.join(options.data_dir, 'PW3D', 'data')
    img_dir = osp.join(data_path, 'imageFiles')
    files = {'images': image_folder(img_dir, '3DPW images (imageFiles/<sequence>/)', IMAGES_SOURCE),
             'h36m_regressor': h36m_regressor_file(options.data_dir)}
    for role, (path, split) in _annotation_files(data_path, subset).items():
        files[role] = coco_file(path, f'3DPW {split} annotations (COCO-style JSON)', SOURCE,
                                image_path=partial(image_path, img_dir))
    if subset == 'crowd':
        files['crowd_poses'] = json_object_file(osp.join(data_path, '3DPW_validation_crowd_hhrnet_result.json'),
                                                '3DPW-Crowd HigherHRNet input poses (JSON)', SOURCE)
    elif subset == 'test' and not options.use_gt_info:
        files['rootnet'] = json_list_file(
            osp.join(options.data_dir, 'PW3D', 'rootnet_output', 'bbox_root_pw3d_output.json'),
            'RootNet 3DPW boxes and root depths', ROOTNET_SOURCE, of='{ann_id, bbox, root_cam}')
    return files


ANNOTATION_FIELDS = ('bbox', 'smpl_param', 'openpose_result')


def _float_array(value, shape, what, path, ann_id):
    """``value`` as a float64 array of ``shape`` (:func:`data.annotations.finite_array` of annotation ``ann_id``)."""
    return finite_array(value, shape, path, f'annotation id {ann_id}', what, dtype=np.float64)


def frame_number(img, path):
    """The frame number of a 3DPW image record: the digits of its ``file_name``
    (``image_00042.jpg`` -> 42), else its ``frame_idx``."""
    digits = ''.join(ch for ch in osp.splitext(osp.basename(str(img['file_name'])))[0] if ch.isdigit())
    if digits:
        return int(digits)
    if isinstance(img.get('frame_idx'), int):
        return img['frame_idx']
    raise AnnotationError(f"{path}: image id {img.get('id')} has no frame number (file_name "
                          f"{img['file_name']!r} holds no digits and there is no integer 'frame_idx').")


def in_subset(subset, sequence, frame):
    """Whether the person of ``sequence`` at frame number ``frame`` belongs to ``subset``
    (``'test'`` keeps everything: the split is the selection)."""
    if subset == 'crowd':
        return any(name in sequence for name in CROWD_SEQUENCES)
    if subset == 'OC':
        stem, _, take = sequence.rpartition('_')
        return take.isdigit() and stem in OC_SEQUENCE_STEMS
    if subset == 'PC':
        first, stop = PC_FRAME_RANGES.get(sequence, (0, 0))
        return first <= frame < stop
    return True


def _camera(img, path, ann_id):
    """The image's ``cam_param`` -> {name: float32 array}; ``focal`` and ``princpt`` (2,) required, all finite."""
    cam_param = img['cam_param']
    record = f"image id {img.get('id')} (annotation id {ann_id})"
    if not isinstance(cam_param, dict) or 'focal' not in cam_param or 'princpt' not in cam_param:
        raise AnnotationError(f"{path}: {record}: 'cam_param' needs 'focal' [fx, fy] and 'princpt' [cx, cy].")
    try:
        camera = {k: np.array(v, dtype=np.float32) for k, v in cam_param.items()}
    except (ValueError, TypeError) as err:
        raise AnnotationError(f"{path}: {record}: 'cam_param' entries must be numeric ({err}).") from err
    for key in ('focal', 'princpt'):
        if camera[key].size != 2:
            raise AnnotationError(f"{path}: {record}: 'cam_param.{key}' must have 2 numbers.")
    for key, value in camera.items():
        check_finite(value, path, record, f'cam_param.{key}')
    return camera


class PW3D(SeededDataset):
    """3DPW evaluation set. ``PW3D(transform, data_split, options=None, subset=None)``.

    options: ``DataOptions`` (None: the run configuration's); subset: one of ``SUBSETS``
    (None: ``'crowd'`` with ``options.crowd``, else ``'test'``); see the module docstring.
    """

    data_files = staticmethod(data_files)

    def __init__(self, transform, data_split, options=None, subset=None):
        self.options = resolve_data_options(options)
        self.transform = transform
        self.subset = resolve_subset(self.options, subset)
        # the data_split argument is ignored
        self.data_split = {'test': 'test', 'crowd': 'validation'}.get(self.subset, 'all')
        self.files = data_files(self.options, subset=self.subset)
        self.data_path = osp.join(self.options.data_dir, 'PW3D', 'data')
        self.img_dir = self.files['images'].path
        self.smpl = body_model(self.options)
        self.h36m_regressor = load_h36m_regressor(self.options.data_dir)
        self.pose_fallback_aids = []
        self.skipped_boxes = 0
        self.datalist = self.load_data()
        if not self.datalist and self.subset in PREBUILT_SUBSET_FILES:
            raise DataError(f"3DPW-{self.subset}: none of the people in {', '.join(self.annotation_paths())} "
                            "belongs to the subset (its sequences and frames: data/PW3D/PW3D.py).")
        self._warn_about_skipped_people()

    # ------------------------------------------------------------------------ loading
    def annotation_paths(self):
        """The annotation files this subset reads, in split order (see the module docstring)."""
        paths = [f.path for role, f in self.files.items() if role.startswith('annotations')]
        missing = [path for path in paths if not osp.isfile(path)]
        if len(paths) > 1 and missing:
            raise FileNotFoundError(
                f"3DPW-{self.subset} takes its people from all three 3DPW splits, but {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} missing. Place the 3DCrowdNet/Pose2Mesh release's "
                f"3DPW_latest_{{train,validation,test}}.json in {self.data_path}, or a pre-built "
                f"{PREBUILT_SUBSET_FILES[self.subset]} (the same format) there.")
        return paths

    def crowd_pose_path(self):
        return self.files['crowd_poses'].path

    def rootnet_path(self):
        return self.files['rootnet'].path

    def uses_rootnet(self):
        return 'rootnet' in self.files

    def load_data(self):
        """The datalist: one dict per kept annotation, in file order (files in split order)."""
        crowd = self.subset == 'crowd'
        hhrnet = read_json_object(self.crowd_pose_path(), LAYOUT_HINT) if crowd else None
        rootnet = self._load_rootnet() if self.uses_rootnet() else None
        datalist = []
        for ann_path in self.annotation_paths():
            datalist.extend(self._load_file(ann_path, hhrnet, rootnet))
        return datalist

    def _load_file(self, ann_path, hhrnet, rootnet):
        """The datalist entries of one annotation file (``hhrnet``: crowd inputs or None;
        ``rootnet``: RootNet entries by annotation id or None)."""
        db = read_coco(ann_path, LAYOUT_HINT)
        crowd = hhrnet is not None
        aspect_ratio = input_aspect_ratio(self.options.geometry)
        datalist = []
        for aid, ann in db.anns.items():
            if ann['image_id'] not in db.imgs:
                raise AnnotationError(f"{ann_path}: annotation id {aid} refers to the unknown image id "
                                      f"{ann['image_id']}.")
            img = db.imgs[ann['image_id']]
            require_fields(img, IMAGE_FIELDS, ann_path, 'image')
            require_fields(ann, ANNOTATION_FIELDS, ann_path, 'annotation')
            sequence = img['sequence']
            if self.subset != 'test' and not in_subset(self.subset, sequence,
                                                       frame_number(img, ann_path) if self.subset == 'PC' else 0):
                continue
            width, height = int(img['width']), int(img['height'])
            ann_bbox = _float_array(ann['bbox'], (4,), 'bbox', ann_path, aid)
            tight_bbox = ann_bbox.astype(np.float32)
            root_joint_depth = None
            if rootnet is None:
                bbox = process_bbox(ann_bbox, width, height, aspect_ratio=aspect_ratio)
                if bbox is None:
                    self.skipped_boxes += 1
                    continue
            else:
                entry = self._rootnet_entry(rootnet, aid)
                bbox = _float_array(entry.get('bbox'), (4,), 'bbox', self.rootnet_path(), aid)
                root_joint_depth = float(_float_array(entry.get('root_cam'), (3,), 'root_cam',
                                                      self.rootnet_path(), aid)[2])

            openpose = _float_array(ann.get('openpose_result'), (18, 3), 'openpose_result', ann_path, aid)
            openpose = add_pelvis(openpose, OPENPOSE18.names)
            if crowd:
                pose, pose_names = self._crowd_pose(hhrnet, aid, openpose), COCO19.names
            else:
                pose, pose_names = openpose, OPENPOSE19.names
            input_joints = transfer_joints(pose, pose_names, SMPL30.names)
            input_bbox = self._input_bbox(input_joints, width, height, aspect_ratio)
            if input_bbox is None:
                self.pose_fallback_aids.append(aid)
                input_bbox = np.array(bbox, dtype=np.float32)

            if not isinstance(ann['smpl_param'], dict):
                raise AnnotationError(f"{ann_path}: annotation id {aid}: 'smpl_param' must be an object with "
                                      "pose, shape, trans and gender.")
            smpl_param = dict(ann['smpl_param'])
            if smpl_param.get('gender') not in ('male', 'female', 'neutral'):
                raise AnnotationError(f"{ann_path}: annotation id {aid}: smpl_param.gender must be 'male', 'female' "
                                 f"or 'neutral', got {smpl_param.get('gender')!r}.")
            datalist.append({
                'ann_id': aid,
                'img_id': ann['image_id'],
                'img_path': image_path(self.img_dir, img),
                'sequence': sequence,
                'img_shape': (height, width),
                'cam_param': _camera(img, ann_path, aid),
                'smpl_param': {
                    'pose': _float_array(smpl_param.get('pose'), (72,), 'smpl_param.pose', ann_path, aid),
                    'shape': _float_array(smpl_param.get('shape'), (10,), 'smpl_param.shape', ann_path, aid),
                    'trans': _float_array(smpl_param.get('trans'), (3,), 'smpl_param.trans', ann_path, aid),
                    'gender': smpl_param['gender']},
                'tight_bbox': tight_bbox,
                'bbox': np.array(bbox, dtype=np.float32),
                'root_joint_depth': root_joint_depth,  # RootNet mode only (mm); unused, as in the original
                'input_joints': input_joints,
                'input_bbox': input_bbox,
            })
        return datalist

    def _load_rootnet(self):
        path = self.rootnet_path()
        if not osp.isfile(path):
            raise FileNotFoundError(
                f"RootNet output not found: {path}\nuse_gt_info=False takes the test boxes and root depths from "
                "RootNet (3DMPPE_ROOTNET_RELEASE output for 3DPW: a JSON list of {ann_id, bbox, root_cam}). "
                "Place it there or set use_gt_info: True.")
        entries = read_json(path, LAYOUT_HINT)
        try:
            return {str(entry['ann_id']): entry for entry in entries}
        except (KeyError, TypeError) as err:
            raise AnnotationError(f"{path}: expected a list of {{ann_id, bbox, root_cam}} objects ({err}).") from err

    def _rootnet_entry(self, rootnet, aid):
        try:
            return rootnet[str(aid)]
        except KeyError:
            raise AnnotationError(f"{self.rootnet_path()} has no entry for annotation id {aid}.") from None

    def _crowd_pose(self, hhrnet, aid, openpose):
        """COCO-19 input pose: HigherHRNet with pelvis and neck, or the OpenPose pose if absent."""
        entry = hhrnet.get(str(aid))
        if entry is None:
            return transfer_joints(openpose, OPENPOSE19.names, COCO19.names)
        if not isinstance(entry, dict):
            raise AnnotationError(f"{self.crowd_pose_path()}: the entry for annotation id {aid} must be an object "
                                  "with 'coco_joints' (17 x [x, y, score]).")
        joints = _float_array(entry.get('coco_joints'), (17, 3), 'coco_joints', self.crowd_pose_path(), aid)
        joints = add_pelvis(joints, COCO17.names)
        return add_neck(joints, COCO17.names + ('Pelvis',))

    @staticmethod
    def _input_bbox(input_joints, width, height, aspect_ratio):
        """Processed crop box around the confident input joints, or None if there is no usable box.

        None when no joint scores above ``POSE_SCORE_THR`` (the original crashes) or the box is
        below a pixel because the confident joints coincide (the original's affine degenerates).
        """
        valid = input_joints[:, 2] > POSE_SCORE_THR
        if not valid.any():
            return None
        bbox = get_bbox(input_joints, valid.astype(np.float32))
        bbox = process_bbox(bbox, width, height, is_3dpw_test=True, aspect_ratio=aspect_ratio)
        if bbox is None or bbox[2] < MIN_INPUT_BOX_SIZE or bbox[3] < MIN_INPUT_BOX_SIZE:
            return None
        return bbox

    def _warn_about_skipped_people(self):
        if self.pose_fallback_aids:
            warnings.warn(
                f"PW3D ({self.data_split}): {len(self.pose_fallback_aids)} of {len(self.datalist)} persons have no "
                f"usable 2D input pose (no joint scores above {POSE_SCORE_THR}, or all confident joints coincide); "
                f"their crops use the annotation's processed box instead (annotation ids "
                f"{self.pose_fallback_aids[:10]}{' ...' if len(self.pose_fallback_aids) > 10 else ''}).",
                stacklevel=3)
        if self.skipped_boxes:
            warnings.warn(f"PW3D ({self.data_split}): skipped {self.skipped_boxes} annotations whose tight bbox has "
                          "no area after clipping to the image.", stacklevel=3)

    # ------------------------------------------------------------------------- samples
    def __len__(self):
        return len(self.datalist)

    def gt_mesh(self, data):
        """(6890,3) float32 GT mesh of the gendered layer (camera frame, metres)."""
        param = data['smpl_param']
        with torch.no_grad():
            verts, _ = self.smpl.layer[param['gender']](
                torch.from_numpy(param['pose'].astype(np.float32))[None],
                torch.from_numpy(param['shape'].astype(np.float32))[None],
                torch.from_numpy(param['trans'].astype(np.float32))[None])
        return verts[0].numpy().astype(np.float32)

    def __getitem__(self, idx):
        data = self.datalist[idx]
        height, width = data['img_shape']
        mesh_cam = self.gt_mesh(data)

        joints = data['input_joints'].copy()
        joint_valid = (joints[:, 2:] > POSE_SCORE_THR).astype(np.float32)

        geometry = self.options.geometry
        crop = crop_for_test(read_image(data['img_path']), data['input_bbox'], joints, geometry)
        img = self._to_tensor(crop.patch)
        joints, img2bb_trans, bb2img_trans = crop.joints_hm, crop.img2bb, crop.bb2img
        joints_mask = joint_valid * in_bounds_mask(joints, geometry.output_hm_shape)

        inputs = {'img': img, 'joints': joints.astype(np.float32), 'joints_mask': joints_mask}
        targets = {'smpl_mesh_cam': mesh_cam}
        meta_info = {'bb2img_trans': bb2img_trans.astype(np.float32), 'img2bb_trans': img2bb_trans.astype(np.float32),
                     'bbox': np.array(data['input_bbox'], dtype=np.float32), 'tight_bbox': data['tight_bbox'].copy(),
                     'aid': int(data['ann_id'])}
        return inputs, targets, meta_info

    def _to_tensor(self, patch):
        """(H,W,3) float32 0..255 -> (3,H,W) float32 tensor in [0,1] (a tensor even without a transform)."""
        return torch.as_tensor(input_image(patch, self.transform))

    # ----------------------------------------------------------------------- evaluation
    def evaluate(self, outs, cur_sample_idx):
        """Per-sample metrics (mm) of one batch of test outputs.

        outs: a list of per-sample dicts (the original's format) or one dict of batched
        arrays/tensors, each with ``smpl_mesh_cam`` (6890,3) predicted pelvis-relative mesh and
        ``smpl_mesh_cam_target`` (6890,3) GT mesh, metres; sample n belongs to
        ``datalist[cur_sample_idx + n]``.  Returns ``{'mpjpe', 'pa_mpjpe', 'mpvpe': [float],
        'aid': [int], 'sequence': [str]}``.
        """
        pred_mesh, gt_mesh = _stack_key(outs, 'smpl_mesh_cam'), _stack_key(outs, 'smpl_mesh_cam_target')
        annots = self.datalist[cur_sample_idx:cur_sample_idx + len(pred_mesh)]
        if len(annots) != len(pred_mesh):
            raise IndexError(f"evaluate got {len(pred_mesh)} outputs from sample {cur_sample_idx}, but the dataset "
                             f"has {len(self.datalist)} samples.")
        metrics = mesh_metrics(pred_mesh, gt_mesh, self.h36m_regressor, self.smpl.joint_regressor[0])
        result = {key: metrics[key].tolist() for key in METRIC_KEYS}
        result['aid'] = [int(a['ann_id']) for a in annots]
        result['sequence'] = [a['sequence'] for a in annots]
        if self.options.vis or self.options.render:
            for n, annot in enumerate(annots):
                self.visualize_sample(_sample(outs, n), annot)
        return result

    def visualize_sample(self, out, annot):
        """Write the ``options.vis`` / ``options.render`` pictures of one sample into ``options.vis_dir``.

        out: the sample's test outputs (NumPy arrays of the model's test-mode outputs); annot:
        its ``datalist`` entry.
        File names keep sequence, image and annotation id: ``<sequence>_<image stem>_<aid>_<kind>``.
        ``render`` or ``vis``: ``_render.jpg`` (the mesh over the image, with the crop box).
        ``vis`` also: ``_input.jpg`` (input 2D pose, scores), ``_positionnet.jpg`` (PositionNet
        joints with their scores), ``_final.jpg`` (projected mesh joints), ``_gt.jpg`` (GT joints
        projected with the 3DPW camera), ``_final.obj`` (predicted root-relative mesh) and
        ``_gt.obj`` (GT mesh centred at its SMPL pelvis), metres.  Outputs whose inputs ``out``
        lacks are left out.  Nothing is displayed.  Returns the written paths.
        """
        from common.utils import vis
        options = self.options
        vis_dir = vis.ensure_dir(options.vis_dir)
        stem = osp.splitext(osp.basename(annot['img_path']))[0]
        prefix = osp.join(vis_dir, f"{annot['sequence']}_{stem}_{annot['ann_id']}_")
        bbox = np.asarray(out.get('bbox', annot['input_bbox']), dtype=np.float64)
        bb2img = out.get('bb2img_trans')
        if bb2img is None:
            bb2img = _crop_to_image_trans(bbox, options.geometry)
        needs_image = options.vis or 'mesh_cam_render' in out
        image = vis.as_uint8_image(load_img(annot['img_path'])) if needs_image else None
        written = []
        if 'mesh_cam_render' in out:
            if options.render:  # the model's render camera (docs/METHOD.md, "Network")
                focal, princpt = vis.render_camera(bbox)
            else:           # the crop camera, expressed in image pixels
                focal, princpt = vis.crop_camera_in_image(bb2img, options.geometry.focal, options.geometry.princpt)
            overlay = vis.render_people(image, [out['mesh_cam_render']], self.smpl.face, focal, princpt)
            written.append(vis.save_image(prefix + 'render.jpg', vis.draw_bbox(overlay, bbox)))
        if not options.vis:
            return written
        skeleton = self.smpl.skeleton
        written.append(vis.save_image(prefix + 'input.jpg', vis.draw_bbox(
            vis.draw_input_pose(image, annot['input_joints'], POSE_SCORE_THR, show_scores=True), bbox)))
        if 'joint_img' in out:
            joints = denorm_joints(out['joint_img'], bb2img, options.geometry.input_img_shape,
                                   options.geometry.output_hm_shape)
            scores = out.get('joint_score')
            scores = None if scores is None else np.asarray(scores).reshape(-1)
            written.append(vis.save_image(prefix + 'positionnet.jpg', vis.draw_bbox(
                vis.draw_skeleton(image, joints, skeleton, scores=scores, show_scores=scores is not None), bbox)))
        if 'joint_proj' in out:
            joints = denorm_joints(out['joint_proj'], bb2img, options.geometry.input_img_shape,
                                   options.geometry.output_hm_shape)
            written.append(vis.save_image(prefix + 'final.jpg', vis.draw_skeleton(image, joints, skeleton)))
        if 'smpl_mesh_cam' in out:
            written.append(vis.write_obj(prefix + 'final.obj', out['smpl_mesh_cam'], self.smpl.face))
        if 'smpl_mesh_cam_target' in out:
            gt_mesh = np.asarray(out['smpl_mesh_cam_target'], dtype=np.float64)
            gt_joints = self.smpl.joint_regressor.astype(np.float64) @ gt_mesh
            cam = annot['cam_param']
            gt_img = cam2pixel(gt_joints, cam['focal'], cam['princpt'])
            written.append(vis.save_image(prefix + 'gt.jpg', vis.draw_skeleton(image, gt_img, skeleton,
                                                                               color=(0, 200, 255))))
            written.append(vis.write_obj(prefix + 'gt.obj', gt_mesh - gt_joints[self.smpl.root_joint_idx],
                                         self.smpl.face))
        return written

    @staticmethod
    def summarize(eval_result):
        """Means over samples (mm) and per-sequence means.

        eval_result: ``evaluate``'s lists concatenated over all batches.  Returns
        ``{'mpjpe', 'pa_mpjpe', 'mpvpe': float, 'num_samples': int,
        'per_sequence': {sequence: {'mpjpe', 'pa_mpjpe', 'mpvpe', 'num_samples'}}}``.
        """
        summary = {key: float(np.mean(eval_result[key])) for key in METRIC_KEYS}
        summary['num_samples'] = len(eval_result['mpjpe'])
        per_sequence = {}
        sequences = np.asarray(eval_result.get('sequence', []))
        for name in sorted(set(sequences.tolist())):
            pick = sequences == name
            entry = {key: float(np.mean(np.asarray(eval_result[key])[pick])) for key in METRIC_KEYS}
            entry['num_samples'] = int(pick.sum())
            per_sequence[name] = entry
        summary['per_sequence'] = per_sequence
        return summary

    @staticmethod
    def print_eval_result(eval_result):
        """Print the original's three lines (means over samples, mm)."""
        print('MPJPE from mesh: %.2f mm' % np.mean(eval_result['mpjpe']))
        print('PA MPJPE from mesh: %.2f mm' % np.mean(eval_result['pa_mpjpe']))
        print('MPVPE from mesh: %.2f mm' % np.mean(eval_result['mpvpe']))


def mesh_metrics(pred_mesh, gt_mesh, h36m_regressor, pelvis_row):
    """MPJPE, PA-MPJPE (14 H36M evaluation joints) and MPVPE in mm for a batch.

    pred_mesh, gt_mesh: (B,6890,3) metres; h36m_regressor (17,6890); pelvis_row (6890,) the
    SMPL-30 pelvis row of the neutral regressor (MPVPE compares pelvis-centred meshes).
    Returns a dict of (B,) float64 arrays.
    """
    gt_joints = regress_joints(h36m_regressor, gt_mesh)
    pred_joints = regress_joints(h36m_regressor, pred_mesh)
    joints = dict(root=H36M17.root, subset=H36M_EVAL_JOINTS)
    return {'mpjpe': joint_error(pred_joints, gt_joints, 'root', **joints) * 1000,
            'pa_mpjpe': joint_error(pred_joints, gt_joints, 'procrustes', **joints) * 1000,
            'mpvpe': vertex_error(pred_mesh, gt_mesh, 'root', root_weights=pelvis_row) * 1000}


def _crop_to_image_trans(bbox, geometry):
    """(2,3) crop -> image affine of a test crop of ``bbox`` (no augmentation)."""
    x, y, w, h = (float(v) for v in bbox)
    height, width = geometry.input_img_shape
    return gen_trans_from_patch_cv(x + w / 2, y + h / 2, w, h, width, height, 1.0, 0.0, inv=True)


def _to_numpy(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _stack_key(outs, key):
    """(B, ...) array of ``key`` from a list of per-sample dicts or a dict of batched values."""
    if isinstance(outs, dict):
        return _to_numpy(outs[key])
    return np.stack([_to_numpy(out[key]) for out in outs])


def _sample(outs, n):
    """Sample ``n`` of ``outs`` as a dict of NumPy arrays."""
    if isinstance(outs, dict):
        return {k: _to_numpy(v)[n] for k, v in outs.items()}
    return {k: _to_numpy(v) for k, v in outs[n].items()}
