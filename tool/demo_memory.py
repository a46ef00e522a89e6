"""Peak memory of the demo's drawing on a very large picture.

    python tool/demo_memory.py [--size 6000x4000] [--people 3] [--render_max_side 1920]

Writes a flat picture of the given size (24 megapixels by default) and one COCO-17 pose per
person into a temporary folder, then runs the demo's library (``common.demo_run.run_demo``)
with a stand-in network whose mesh is a closed body-sized tube of 13,800 triangles (as many as
SMPL's) filling each person's box, so the rasteriser works as on real meshes; the network's
own memory is left out.  Prints the process's peak resident memory (``ru_maxrss``) before and
after the demo, in MiB.  Run it once per ``--render_max_side`` (0: full size) to compare.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Peak memory of the demo's drawing on a large picture.")
    parser.add_argument('--size', default='6000x4000', help='picture WIDTHxHEIGHT (default 6000x4000, 24 MP)')
    parser.add_argument('--people', type=int, default=3)
    parser.add_argument('--render_max_side', type=int, default=1920, help='0: draw at full size')
    return parser.parse_args(argv)


if __name__ == '__main__':
    parse_args()  # --help and usage errors answer before torch and OpenCV are imported

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from common.options import GeometryOptions  # noqa: E402

GEOMETRY = GeometryOptions(input_img_shape=(256, 256), output_hm_shape=(64, 64, 64), bbox_3d_size=2,
                           camera_3d_size=2.5, focal=(5000, 5000), sigma=2.5)
# Normalised (x, y) of COCO-17 joints of a standing person, height 1.
POSE_LAYOUT = np.array([[0, -.42], [-.03, -.45], [.03, -.45], [-.06, -.43], [.06, -.43], [-.12, -.3], [.12, -.3],
                        [-.15, -.12], [.15, -.12], [-.16, .05], [.16, .05], [-.08, .05], [.08, .05], [-.08, .27],
                        [.08, .27], [-.08, .5], [.08, .5]])


def tube_mesh(rings=115, segments=60, height=1.8, radius=0.25):
    """A closed-side cylinder (x right, y down, z forward) centred at the origin: vertices
    (rings * segments, 3), faces (2 * (rings - 1) * segments, 3)."""
    angle = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    y = np.linspace(-height / 2, height / 2, rings)
    verts = np.stack([np.tile(radius * np.cos(angle), rings), np.repeat(y, segments),
                      np.tile(radius * np.sin(angle), rings)], 1)
    faces = []
    for r in range(rings - 1):
        for s in range(segments):
            a, b = r * segments + s, r * segments + (s + 1) % segments
            faces += [[a, b, a + segments], [b, b + segments, a + segments]]
    return verts, np.array(faces)


class TubeNetwork(torch.nn.Module):
    """Stand-in network: a tube mesh at the depth where 1.8 m fills the person's box height."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        verts, self.mesh_face = tube_mesh()
        self.verts = torch.as_tensor(verts, dtype=torch.float32)

    def forward(self, inputs, targets, meta_info, mode, render=False):
        box_h = meta_info['bbox'][:, 3:4]
        depth = 5000 * 1.8 / box_h                               # metres, per person
        mesh = self.verts[None] + torch.cat([torch.zeros_like(depth), torch.zeros_like(depth), depth], 1)[:, None]
        batch = len(box_h)
        return {'cam_param': torch.zeros(batch, 3), 'smpl_pose': torch.zeros(batch, 72),
                'smpl_shape': torch.zeros(batch, 10), 'mesh_cam_render': mesh}

    def camera_translation(self, cam_param, meta_info=None, render=False):
        return cam_param


def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None):
    args = parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split('x'))
    from common.demo_run import run_demo
    with tempfile.TemporaryDirectory() as work:
        img_path = os.path.join(work, 'large.jpg')
        cv2.imwrite(img_path, np.full((height, width, 3), 90, np.uint8))
        entries = []
        for k in range(args.people):
            centre = np.array([width * (k + 1) / (args.people + 1), height / 2])
            xy = centre + POSE_LAYOUT * height * 0.7
            entries.append({'image_id': 1, 'score': 0.9,
                            'keypoints': np.concatenate([xy, np.full((17, 1), 0.9)], 1).ravel().tolist()})
        pose_path = os.path.join(work, 'poses.json')
        with open(pose_path, 'w') as f:
            json.dump(entries, f)
        before = peak_mib()
        paths = run_demo(img_path, pose_path, os.path.join(work, 'out'), TubeNetwork(), GEOMETRY,
                         log=lambda *a: None, render_max_side=args.render_max_side)
        drawn = cv2.imread(paths['render']).shape
    print(f'{width}x{height}, {paths["people"]} people, render_max_side {args.render_max_side}: '
          f'overlay {drawn[1]}x{drawn[0]}, peak RSS {peak_mib():.0f} MiB (before the demo {before:.0f} MiB)')


if __name__ == '__main__':
    main()
