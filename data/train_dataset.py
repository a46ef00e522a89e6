"""Base classes of the training loaders Human36M, MuCo, MSCOCO and MPII.

A training loader derives from ``TrainDataset`` (3D sets: ``MocapTrainDataset``), sets
the class attributes that describe its joint set, synthesis and fit variant, and
implements ``load_data()`` returning the datalist.  ``TrainDataset.__getitem__`` then
runs the steps of ``data/sample_steps.py`` and ``data/smpl_targets.py``
(docs/METHOD.md, "Training samples").

Every random draw comes from the per-sample generator ``self.sample_rng(idx, visit=visit)``, in the
order: augmentation parameters, then the PoseFix synthesiser.
``options.fix_flip_neighbours`` switches on the corrected neighbour handling
(docs/METHOD.md, "Differences from the original"; off: SGRE's behaviour).

Datalist entry (one person), keys read by ``TrainDataset.get_train_sample``:

=================  ==========================================================
``img_path``       str, absolute path of the image
``img_shape``      (H, W) of the original image, pixels
``bbox``           (4,) float32 processed bbox [x, y, w, h] (``process_bbox``)
``tight_bbox``     (4,) float32 annotated bbox
``joint_img``      (J, 3) float32 in the dataset joint set: (u, v, Z_mm) for 3D
                   sets, (u, v, valid) for 2D sets
``joint_cam``      (J, 3) float32 camera coordinates in mm (3D sets; 2D: None)
``joint_valid``    (J, 1) float32 0/1
``smpl_param``     dict with ``pose`` (72), ``shape`` (10), ``trans`` (3, metres),
                   or None when the person has no fit
``cam_param``      dict of float32 arrays ``focal`` (2,), ``princpt`` (2,) and, for
                   the "H36M" variant, ``R`` (3, 3) and ``t`` (3,) in mm.  For 2D
                   sets it is the NeuralAnnot camera (None without fit)
``num_overlap``    int, number of neighbours
``near_joints``    (K, J_coco, 3) float32 neighbours' joints in original-image
                   pixels with a validity column, in the COCO set of the dataset's
                   synthesis (K >= 1; ``zeros((1, J_coco, 3))`` when none)
=================  ==========================================================
"""
from common.utils.joints import COCO17, SMPL30, transfer_joints
from common.utils.preprocessing import to_heatmap_xy
from data.annotations import load_h36m_regressor
from data.dataset import SeededDataset, body_model, resolve_data_options
from data.sample_steps import (Neighbours, SynthesisSpec, assemble_sample, input_image, load_crop,
                               process_gt_joints, process_neighbours, synthesize_input_pose)
from data.smpl_targets import SmplFit, SparseRegressor, dummy_fit_targets, smpl_fit_targets


class TrainDataset(SeededDataset):
    """Base class of the four training loaders; ``__getitem__`` builds 'train' samples.

    ``TrainDataset(transform, data_split, options=None)``: transform turns the (H, W, 3)
    patch into the input tensor (torchvision ToTensor, or None for a NumPy array);
    options: ``common.options.DataOptions`` (None: the run configuration's).
    Subclasses set the class attributes below, implement ``load_data()`` and, where
    needed, override ``fit_is_valid`` (3D sets: fitting error) and ``get_test_sample``.
    Pipeline functions never modify datalist arrays in place, so ``__getitem__`` only
    makes a shallow copy of the entry.
    """

    joint_set = None             # dataset JointSet (names, flip pairs, root)
    is_3d = False
    fit_variant = 'NeuralAnnot'
    fit_regressor = None         # 3D sets: SparseRegressor of the fitting-error joints
    synth_joints_name = COCO17.names   # COCO set of the synthesiser and of near_joints
    synth_shared_idx = ()        # dataset joints receiving synthetic x,y
    synth_force_valid = False    # 3D sets: every dataset joint counts as valid for synthesis

    def __init__(self, transform, data_split, options=None):
        self.options = resolve_data_options(options)
        self.transform = transform
        self.data_split = data_split
        self.smpl = body_model(self.options)
        self.datalist = self.load_data()

    @property
    def joints_name(self):
        """The dataset joint names (rows of the datalist's ``joint_img``)."""
        return self.joint_set.names

    @property
    def synthesis(self):
        """This dataset's ``SynthesisSpec``."""
        return SynthesisSpec(self.joint_set.names, self.synth_joints_name, self.synth_shared_idx,
                             self.synth_force_valid)

    def load_data(self):
        """Return the datalist (list of per-person dicts, keys in the module docstring)."""
        raise NotImplementedError

    def __len__(self):
        return len(self.datalist)

    def __getitem__(self, idx):
        return self.get_sample(idx)

    def get_sample(self, idx, visit=()):
        """Sample ``idx``; ``visit`` keys the random draws of a repeated visit (``data/dataset.py``)."""
        data = dict(self.datalist[idx])
        if self.data_split == 'train':
            return self.get_train_sample(data, self.sample_rng(idx, visit=visit), augment=True)
        return self.get_test_sample(idx, data)

    def fit_is_valid(self, data, fit, gt):
        """Whether the fit is usable (2D sets: always). 3D sets compare with GT (fitting error)."""
        return True

    def get_train_sample(self, data, rng, augment=True):
        """The training sample of one datalist entry (not modified); ``augment=False`` crops plainly."""
        geometry = self.options.geometry
        patch, crop = load_crop(data, geometry, self.options.augment if augment else None, rng)
        img = input_image(patch, self.transform)
        gt = process_gt_joints(data['joint_img'], data['joint_valid'], self.joint_set, crop, geometry,
                               joint_cam=data.get('joint_cam') if self.is_3d else None)
        near_joints = process_neighbours(data['near_joints'], data['num_overlap'], crop,
                                         self.options.fix_flip_neighbours)
        synth_xy = synthesize_input_pose(gt, self.synthesis, Neighbours(near_joints, data['num_overlap']),
                                         data['tight_bbox'], crop, rng)
        input_joints = transfer_joints(to_heatmap_xy(synth_xy, geometry), self.joints_name, SMPL30.names)

        if data.get('smpl_param') is not None:
            fit = smpl_fit_targets(SmplFit(data['smpl_param'], data['cam_param'], self.fit_variant), crop,
                                   geometry, self.smpl, regressor=self.fit_regressor, with_mesh=False)
            is_valid_fit = self.fit_is_valid(data, fit, gt)
        else:
            fit = dummy_fit_targets(self.smpl)
            is_valid_fit = False
        return assemble_sample(img, input_joints, gt, fit, is_valid_fit, self.is_3d)

    def get_test_sample(self, idx, data):
        """Non-train splits; loaders that have one override this."""
        raise NotImplementedError(f"{type(self).__name__} has no '{self.data_split}' split.")


class MocapTrainDataset(TrainDataset):
    """Base of the 3D training sets (Human36M, MuCo).

    GT joints come from mocap in camera coordinates and all count as valid for the
    synthesiser (COCO-17); an SMPL fit is valid when its fitting error against H36M-17
    joints regressed from the fit mesh is small (``fit_is_valid`` in the subclass), so
    only the vertices that regressor reads are skinned.
    Attributes: ``h36m_regressor`` (17, 6890) float64 and ``fit_regressor``, its
    ``SparseRegressor``.
    """

    is_3d = True
    synth_joints_name = COCO17.names
    synth_force_valid = True

    def __init__(self, transform, data_split, options=None):
        options = resolve_data_options(options)
        self.h36m_regressor = load_h36m_regressor(options.data_dir)
        self.fit_regressor = SparseRegressor(self.h36m_regressor)
        super().__init__(transform, data_split, options)
