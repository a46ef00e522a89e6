"""Small frozen option records passed from the configuration down to the library.

``main/config.py`` is the one file users edit; it builds these records in one place
(``cfg.geometry_options()``, ``cfg.augment_options()``, ...).  Everything below the
assembly layer (nets, body model, geometry, augmentation, datasets' sample steps)
receives a record or plain arguments and never reads the global configuration, so a
DataLoader worker gets its options with the dataset it unpickles and no call depends
on a global toggled elsewhere.  Records are plain frozen dataclasses: hashable,
picklable, printable.  This module imports only the standard library.
"""
from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass(frozen=True)
class GeometryOptions:
    """Crop, heatmap and virtual-camera geometry shared by the data and the model.

    input_img_shape: (H, W) pixels of the network's input crop.
    output_hm_shape: (D, H, W) cells of the 3D joint heatmap (x, y in heatmap units).
    bbox_3d_size: metres spanned by the heatmap depth axis (root-relative depth).
    camera_3d_size: metres of the crop's assumed real-world extent (camera depth prior).
    focal: (fx, fy) pixels of the virtual crop camera; its principal point is the crop centre.
    sigma: standard deviation, in heatmap cells, of the input 2D-pose Gaussian heatmaps.
    """
    input_img_shape: Tuple[int, int]
    output_hm_shape: Tuple[int, int, int]
    bbox_3d_size: float
    camera_3d_size: float
    focal: Tuple[float, float]
    sigma: float

    @property
    def princpt(self):
        """(cx, cy) of the virtual crop camera: the centre of ``input_img_shape``."""
        height, width = self.input_img_shape
        return (width / 2, height / 2)


@dataclass(frozen=True)
class AugmentOptions:
    """Training-time augmentation ranges.

    scale_factor / rot_factor: half-widths of the (clipped) normal draws of crop scale
    and rotation (degrees); color_factor: per-channel colour scale in [1-c, 1+c];
    use_occlusion: paste Pascal VOC occluders (needs ``voc_dir``).
    """
    scale_factor: float
    rot_factor: float
    color_factor: float
    use_occlusion: bool
    voc_dir: Optional[str]


@dataclass(frozen=True)
class BodyModelPaths:
    """Where the body-model files are.

    smpl_model_dir: folder of ``basicModel_{neutral_lbs_10_207_0,f_lbs_10_207_0,m_lbs_10_207_0}_v1.0.0.pkl``.
    regressor_dir: folder holding ``J_regressor_extra.npy`` (the data root).
    """
    smpl_model_dir: str
    regressor_dir: str


@dataclass(frozen=True)
class DataOptions:
    """Everything a dataset's sample steps need, carried by the dataset into its workers.

    data_dir: root of the data tree (``<data_dir>/<Dataset>/...``).
    use_gt_info: test crops from ground-truth boxes (True) or detector boxes.
    fix_flip_neighbours: mirror neighbours' joints in flipped training crops.
    crowd: evaluate the 3DPW-Crowd split instead of the 3DPW test split.
    vis / render: write test-time pictures into ``vis_dir`` (None: not set up).
    seed: base seed of the per-sample random generators (None: fresh entropy per run).
    """
    data_dir: str
    geometry: GeometryOptions
    augment: AugmentOptions
    body_model: BodyModelPaths
    use_gt_info: bool
    fix_flip_neighbours: bool
    crowd: bool
    vis: bool
    render: bool
    vis_dir: Optional[str]
    seed: Optional[int]


@dataclass(frozen=True)
class ModelOptions:
    """What ``get_model`` needs besides the joint and vertex counts.

    resnet_type: 50, 101 or 152; imagenet_weights: local torchvision ResNet state-dict
    file for a fresh backbone (None: random initialisation).
    """
    geometry: GeometryOptions
    body_model: BodyModelPaths
    resnet_type: int
    imagenet_weights: Optional[str]
