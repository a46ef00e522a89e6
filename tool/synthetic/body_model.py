"""A synthetic stand-in for the SMPL body model and its regressor files
(command line: ``python tool/make_synthetic_smpl.py --out DIR [--seed N]``).

The mannequin is a left-right mirror-symmetric body in T-pose (metres, y up, facing +z, the
person's left at +x, pelvis near the origin, about 1.7 m tall), made of closed elliptic tubes
around the bones of an SMPL-like skeleton that are joined into one closed, consistently
oriented surface with exactly 6890 vertices and 13776 faces.  The face-keypoint vertices
331 (nose), 2802/6262 (left/right eye) and 3489/3990 (left/right ear) sit on the head.
The files have the fields and types of the official ``basicModel_*_lbs_10_207_0_v1.0.0.pkl``
(plain NumPy, ``J_regressor`` scipy-sparse), so smplpytorch's loader and this project's
chumpy-free loader both read them.  Everything follows from the seed.
"""
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse

MODEL_FILES = {
    'neutral': 'basicModel_neutral_lbs_10_207_0_v1.0.0.pkl',
    'male': 'basicModel_m_lbs_10_207_0_v1.0.0.pkl',
    'female': 'basicModel_f_lbs_10_207_0_v1.0.0.pkl',
}
MIRROR_INDEX_FILE = 'vertex_mirror_index.npy'
NUM_VERTICES, NUM_FACES, NUM_JOINTS = 6890, 13776, 24
ROOT_PARENT = 4294967295  # the official files store the root's parent as unsigned -1
PARENTS = [ROOT_PARENT, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
JOINT_FLIP = np.array([0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20, 23, 22])
FACE_KPS_VERTEX = {'nose': 331, 'l_eye': 2802, 'r_eye': 6262, 'l_ear': 3489, 'r_ear': 3990}
MIRROR_SIGN = np.array([-1.0, 1.0, 1.0])

# Left-side / midline rest joints (metres) of a T-pose; right joints mirror the left ones.
SKELETON_LEFT = {
    0: (0.0, -0.22, 0.02), 1: (0.07, -0.31, 0.02), 3: (0.0, -0.11, 0.0), 4: (0.10, -0.68, 0.015),
    6: (0.0, 0.025, 0.02), 7: (0.09, -1.09, -0.025), 9: (0.0, 0.08, 0.025), 10: (0.12, -1.145, 0.10),
    12: (0.0, 0.29, -0.005), 13: (0.075, 0.20, -0.01), 15: (0.0, 0.36, 0.015), 16: (0.195, 0.235, -0.017),
    18: (0.455, 0.222, -0.04), 20: (0.72, 0.233, -0.05), 22: (0.81, 0.225, -0.065),
}

H36M_JOINTS = ('Pelvis', 'R_Hip', 'R_Knee', 'R_Ankle', 'L_Hip', 'L_Knee', 'L_Ankle', 'Torso', 'Neck',
               'Nose', 'Head_top', 'L_Shoulder', 'L_Elbow', 'L_Wrist', 'R_Shoulder', 'R_Elbow', 'R_Wrist')
COCO_JOINTS = ('Nose', 'L_Eye', 'R_Eye', 'L_Ear', 'R_Ear', 'L_Shoulder', 'R_Shoulder', 'L_Elbow', 'R_Elbow',
               'L_Wrist', 'R_Wrist', 'L_Hip', 'R_Hip', 'L_Knee', 'R_Knee', 'L_Ankle', 'R_Ankle')
EXTRA_JOINTS = ('R_Hip', 'L_Hip', 'Neck_LSP', 'Head_top', 'Pelvis_MPII', 'Thorax_MPII', 'Spine_H36M',
                'Jaw_H36M', 'Head_H36M')


def _mirror_joint(j):
    return int(JOINT_FLIP[j])


def skeleton_joints(scale=1.0):
    """(24, 3) rest joints of the T-pose skeleton, metres."""
    joints = np.zeros((NUM_JOINTS, 3))
    for j, pos in SKELETON_LEFT.items():
        joints[j] = pos
        joints[_mirror_joint(j)] = np.array(pos) * MIRROR_SIGN
    return joints * scale


@dataclass
class TubeSpec:
    """A closed tube around a polyline: ``n`` rings of ``m`` vertices plus two apex vertices.

    ``path`` entries are joint ids (ring placed exactly at the joint) or 3-tuples (free points);
    the first and last entries are the tips.  ``radii`` maps path-position keys (float index
    along the path) to (radius along ``up``, radius across); ``caps`` are the lengths of the
    rounded ends; ``chain`` lists the skinning joints, ``before`` drives the part before them.
    """
    name: str
    path: list
    radii: dict
    m: int
    n: int
    up: tuple
    caps: tuple
    chain: list
    before: int
    side: str = 'mid'  # 'mid' (self-symmetric) or 'left' (mirrored into a right copy)


def _body_specs():
    """The body's tubes (left limbs get a mirrored right copy).

    Vertex counts n*m + 2: torso 1602, head 812, and per side leg 1250, arm 762, foot 226,
    which add up to SMPL's 6890.  Self-symmetric tubes need an even m.
    """
    return [
        TubeSpec('torso', [(0.0, -0.42, 0.02), 0, 3, 6, 9, (0.0, 0.235, 0.0), (0.0, 0.30, 0.0)],
                 {0.0: (0.15, 0.10), 1.0: (0.16, 0.105), 2.0: (0.135, 0.095), 3.0: (0.15, 0.10),
                  4.0: (0.16, 0.105), 5.0: (0.185, 0.095), 6.0: (0.17, 0.09)},
                 m=40, n=40, up=(1.0, 0.0, 0.0), caps=(0.08, 0.07), chain=[0, 3, 6, 9], before=0),
        TubeSpec('head', [(0.0, 0.18, -0.005), 12, 15, (0.0, 0.565, 0.02)],
                 {0.0: (0.05, 0.05), 1.0: (0.052, 0.055), 2.0: (0.055, 0.06), 2.2: (0.072, 0.085),
                  2.45: (0.078, 0.095), 2.7: (0.072, 0.088), 3.0: (0.06, 0.07)},
                 m=30, n=27, up=(1.0, 0.0, 0.0), caps=(0.04, 0.07), chain=[12, 15], before=9),
        TubeSpec('leg', [(0.07, -0.20, 0.02), 1, 4, 7, (0.09, -1.175, -0.03)],
                 {0.0: (0.085, 0.085), 1.0: (0.085, 0.085), 1.5: (0.072, 0.074), 2.0: (0.052, 0.055),
                  2.4: (0.056, 0.06), 3.0: (0.036, 0.04), 4.0: (0.04, 0.045)},
                 m=32, n=39, up=(1.0, 0.0, 0.0), caps=(0.085, 0.04), chain=[1, 4, 7], before=0, side='left'),
        TubeSpec('arm', [(0.03, 0.20, -0.01), 13, 16, 18, 20, 22, (0.90, 0.22, -0.07)],
                 {0.0: (0.05, 0.05), 1.0: (0.055, 0.055), 2.0: (0.055, 0.055), 2.5: (0.046, 0.048),
                  3.0: (0.038, 0.04), 3.5: (0.037, 0.038), 4.0: (0.025, 0.032), 5.0: (0.017, 0.045),
                  6.0: (0.012, 0.035)},
                 m=20, n=38, up=(0.0, 1.0, 0.0), caps=(0.05, 0.05), chain=[13, 16, 18, 20, 22], before=9,
                 side='left'),
        TubeSpec('foot', [(0.093, -1.135, -0.01), 10, (0.125, -1.15, 0.18)],
                 {0.0: (0.04, 0.035), 0.5: (0.045, 0.037), 1.0: (0.05, 0.025), 2.0: (0.045, 0.02)},
                 m=14, n=16, up=(1.0, 0.0, 0.0), caps=(0.03, 0.04), chain=[10], before=7, side='left'),
    ]


@dataclass
class Tube:
    """A built tube: vertices, faces (local indices), per-ring arc positions and centres."""
    spec: TubeSpec
    verts: np.ndarray
    faces: np.ndarray
    ring_s: np.ndarray
    ring_centres: np.ndarray
    joint_ring: dict
    vertex_centre: np.ndarray  # (V,3) axis point each vertex is placed around
    vertex_s: np.ndarray
    mirror: np.ndarray = field(default=None)  # local mirror map for self-symmetric tubes
    offset: int = 0


def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _ring_phase(m):
    """Angle offset (in steps) that makes the ring symmetric under x -> -x with vertices at +-90 deg."""
    return 0.0 if m % 4 == 0 else 0.5


def _build_tube(spec, joints, scale):
    points, joint_at = [], {}
    for entry in spec.path:
        if isinstance(entry, int):
            joint_at[entry] = len(points)
            points.append(joints[entry])
        else:
            points.append(np.array(entry) * scale)
    points = np.array(points)
    seg_len = np.linalg.norm(np.diff(points, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg_len)])
    total = cum[-1]

    ring_s = np.linspace(0.0, total, spec.n + 2)[1:-1]
    joint_ring = {}
    for j, k in joint_at.items():  # put a ring exactly on every joint (the regressor uses it)
        ring = int(np.argmin(np.abs(ring_s - cum[k])))
        ring_s[ring] = cum[k]
        joint_ring[j] = ring
    assert len(set(joint_ring.values())) == len(joint_ring), spec.name

    def along(s):
        return np.stack([np.interp(s, cum, points[:, c]) for c in range(3)], axis=-1)

    keys = np.array(sorted(spec.radii))
    key_s = np.interp(keys, np.arange(len(points)), cum)
    radii = np.array([spec.radii[k] for k in sorted(spec.radii)]) * scale
    ru = np.interp(ring_s, key_s, radii[:, 0])
    rw = np.interp(ring_s, key_s, radii[:, 1])
    cap0, cap1 = np.array(spec.caps) * scale
    d0, d1 = ring_s / cap0, (total - ring_s) / cap1
    cap = np.ones_like(ring_s)
    cap = np.where(d0 < 1, np.sqrt(np.clip(1 - (1 - d0) ** 2, 0, 1)), cap)
    cap = np.where(d1 < 1, np.sqrt(np.clip(1 - (1 - d1) ** 2, 0, 1)), cap)
    ru, rw = ru * cap, rw * cap

    centres = along(ring_s)
    step = 0.02 * scale
    tangent = along(np.clip(ring_s + step, 0, total)) - along(np.clip(ring_s - step, 0, total))
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    up = np.array(spec.up)
    u = up - (tangent @ up)[:, None] * tangent
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    w = np.cross(tangent, u)

    m = spec.m
    phi = 2 * np.pi * (np.arange(m) + _ring_phase(m)) / m
    ring_verts = (centres[:, None] + ru[:, None, None] * np.cos(phi)[None, :, None] * u[:, None]
                  + rw[:, None, None] * np.sin(phi)[None, :, None] * w[:, None])
    verts = np.concatenate([points[:1], ring_verts.reshape(-1, 3), points[-1:]])
    vertex_centre = np.concatenate([points[:1], np.repeat(centres, m, axis=0), points[-1:]])
    vertex_s = np.concatenate([[0.0], np.repeat(ring_s, m), [total]])

    faces = _tube_faces(spec.n, m)
    if _signed_volume(verts, faces) < 0:
        faces = faces[:, [0, 2, 1]]
    tube = Tube(spec, verts, faces, ring_s, centres, joint_ring, vertex_centre, vertex_s)
    if spec.side == 'mid':
        tube.mirror = _mid_tube_mirror(spec.n, m)
    return tube


def _tube_faces(n, m):
    """Faces of a capped tube: apex 0, rings 1..n*m (ring-major), apex n*m+1."""
    ring = 1 + np.arange(n)[:, None] * m
    j = np.arange(m)[None, :]
    a, b = ring[:-1] + j, ring[:-1] + (j + 1) % m
    c, d = ring[1:] + (j + 1) % m, ring[1:] + j
    quads = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    first, last = 1 + np.arange(m), 1 + (n - 1) * m + np.arange(m)
    start = np.stack([np.zeros(m, int), np.roll(first, -1), first], -1)
    end = np.stack([np.full(m, n * m + 1), last, np.roll(last, -1)], -1)
    return np.concatenate([start, quads, end]).astype(np.int64)


def _signed_volume(verts, faces):
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return np.einsum('ij,ij->', a, np.cross(b, c)) / 6.0


def _mid_tube_mirror(n, m):
    """Vertex map of a self-symmetric tube under x -> -x (ring angle phi -> pi - phi)."""
    j = np.arange(m)
    partner = (m // 2 - j) % m if _ring_phase(m) == 0 else (m // 2 - 1 - j) % m
    rings = (1 + np.arange(n)[:, None] * m + partner[None, :]).reshape(-1)
    return np.concatenate([[0], rings, [n * m + 1]])


def _mirror_tube(tube):
    """The right-side copy of a left tube (x negated, orientation kept outward)."""
    spec = TubeSpec(**{**tube.spec.__dict__, 'name': 'r_' + tube.spec.name, 'side': 'right',
                       'chain': [_mirror_joint(j) for j in tube.spec.chain],
                       'before': _mirror_joint(tube.spec.before)})
    return Tube(spec, tube.verts * MIRROR_SIGN, tube.faces[:, [0, 2, 1]], tube.ring_s,
                tube.ring_centres * MIRROR_SIGN, {_mirror_joint(j): r for j, r in tube.joint_ring.items()},
                tube.vertex_centre * MIRROR_SIGN, tube.vertex_s)


class Body:
    """All tubes of one gender, joined into a single mesh (before the final vertex reordering)."""

    def __init__(self, scale=1.0, width=None, faces=None):
        """``faces``: reuse the joined faces of another body (genders share the neutral topology)."""
        width = width or {}
        joints = skeleton_joints(scale)
        self.tubes = []
        for spec in _body_specs():
            spec.radii = {k: (r[0] * width.get(spec.name, 1.0), r[1] * width.get(spec.name, 1.0))
                          for k, r in spec.radii.items()}
            tube = _build_tube(spec, joints, scale)
            self.tubes.append(tube)
            if spec.side == 'left':
                self.tubes.append(_mirror_tube(tube))
        offset = 0
        for tube in self.tubes:
            tube.offset = offset
            offset += len(tube.verts)
        assert offset == NUM_VERTICES, offset
        self.by_name = {t.spec.name: t for t in self.tubes}
        self.verts = np.concatenate([t.verts for t in self.tubes])
        self.vertex_centre = np.concatenate([t.vertex_centre for t in self.tubes])
        self.faces = self._join_faces() if faces is None else faces
        self.mirror = self._mirror_map()

    def _join_faces(self):
        """Connect every tube to its parent with a hidden three-sided bridge (a connected sum).

        Each closed tube has F = 2V - 4; removing one triangle from each of two surfaces and
        joining the holes by 6 triangles adds 4 faces, so the joined surface of all 6890
        vertices has exactly 2 * 6890 - 4 = 13776 faces and stays consistently oriented.
        """
        faces = {t.spec.name: t.faces + t.offset for t in self.tubes}
        bridges = []
        links = [('head', 'torso'), ('leg', 'torso'), ('r_leg', 'torso'), ('arm', 'torso'),
                 ('r_arm', 'torso'), ('foot', 'leg'), ('r_foot', 'r_leg')]
        for child_name, parent_name in links:
            child = self.by_name[child_name]
            child_face = faces[child_name][0]  # a face of the start cap, which lies inside the parent
            parent_faces = faces[parent_name]
            # The parent face the child's axis passes through lies inside the child: hidden.
            centroid = self.verts[parent_faces].mean(axis=1)
            dist = _distance_to_polyline(centroid, child.ring_centres)
            pick = int(np.argmin(dist))
            parent_face = parent_faces[pick]
            faces[parent_name] = np.delete(parent_faces, pick, axis=0)
            faces[child_name] = faces[child_name][1:]
            bridges.append(self._bridge(child_face, parent_face))
        return np.concatenate(list(faces.values()) + bridges).astype(np.int64)

    def _bridge(self, child_face, parent_face):
        ring1 = list(child_face)
        ring2 = [parent_face[2], parent_face[1], parent_face[0]]
        best = min(range(3), key=lambda r: sum(
            np.linalg.norm(self.verts[ring1[i]] - self.verts[ring2[(i + r) % 3]]) for i in range(3)))
        ring2 = ring2[best:] + ring2[:best]
        out = []
        for i in range(3):
            p0, p1, q0, q1 = ring1[i], ring1[(i + 1) % 3], ring2[i], ring2[(i + 1) % 3]
            out += [(p0, p1, q1), (p0, q1, q0)]
        return np.array(out)

    def _mirror_map(self):
        mirror = np.empty(NUM_VERTICES, dtype=np.int64)
        for tube in self.tubes:
            local = np.arange(len(tube.verts))
            if tube.spec.side == 'mid':
                mirror[tube.offset + local] = tube.offset + tube.mirror
            else:
                other = self.by_name[tube.spec.name[2:] if tube.spec.side == 'right' else 'r_' + tube.spec.name]
                mirror[tube.offset + local] = other.offset + local
        return mirror

    def ring_vertices(self, tube_name, joint=None, s=None):
        """Global ids and weights (summing to 1) of the ring(s) at ``joint`` or arc position ``s``."""
        tube = self.by_name[tube_name]
        m = tube.spec.m
        if joint is not None:
            rings, ws = [tube.joint_ring[joint]], [1.0]
        else:
            k = int(np.clip(np.searchsorted(tube.ring_s, s) - 1, 0, len(tube.ring_s) - 2))
            t = float(np.clip((s - tube.ring_s[k]) / (tube.ring_s[k + 1] - tube.ring_s[k]), 0, 1))
            rings, ws = [k, k + 1], [1 - t, t]
        ids = np.concatenate([tube.offset + 1 + r * m + np.arange(m) for r in rings])
        weights = np.concatenate([np.full(m, w / m) for w in ws])
        return ids, weights


def _distance_to_polyline(points, line):
    a, b = line[:-1], line[1:]
    ab = b - a
    t = np.clip(np.einsum('psc,sc->ps', points[:, None] - a[None], ab) / np.einsum('sc,sc->s', ab, ab), 0, 1)
    closest = a[None] + t[..., None] * ab[None]
    return np.linalg.norm(points[:, None] - closest, axis=-1).min(axis=1)


# ----------------------------------------------------------------------------- per-vertex data
def _skinning_weights(body):
    """(6890, 24) weights: each ring follows its bone, blended smoothly across joints."""
    weights = np.zeros((NUM_VERTICES, NUM_JOINTS))
    for tube in body.tubes:
        spec = tube.spec
        chain_s = [tube.ring_s[tube.joint_ring[j]] for j in spec.chain]
        gaps = np.diff([0.0] + chain_s)
        half = min(0.04, 0.4 * gaps[gaps > 0].min()) if len(chain_s) > 1 else 0.03
        s = tube.vertex_s
        w = np.zeros((len(s), NUM_JOINTS))
        w[:, spec.before] = 1.0
        for joint, js in zip(spec.chain, chain_s):
            alpha = _smoothstep((s - js + half) / (2 * half))[:, None]
            w = (1 - alpha) * w
            w[:, joint] += alpha[:, 0]
        weights[tube.offset:tube.offset + len(s)] = w
    torso = body.by_name['torso']
    ids = torso.offset + np.arange(len(torso.verts))
    x, y = body.verts[ids, 0], body.verts[ids, 1]
    # The shoulder corners of the torso follow the collar bones.
    alpha = 0.6 * _smoothstep((np.abs(x) - 0.09) / 0.08) * _smoothstep((y - 0.12) / 0.08)
    collar = np.where(x > 0, 13, 14)
    weights[ids] *= (1 - alpha)[:, None]
    weights[ids, collar] += alpha
    return weights


def _joint_regressor(body):
    """(24, 6890): each SMPL joint is the centroid of the tube ring placed on it."""
    reg = np.zeros((NUM_JOINTS, NUM_VERTICES))
    for tube in body.tubes:
        for joint in tube.joint_ring:
            ids, w = body.ring_vertices(tube.spec.name, joint=joint)
            reg[joint, ids] = w
    assert np.all(reg.sum(axis=1) > 0.99)
    return reg


def _gaussian_row(verts, point, sigma):
    """Regressor row averaging the vertices near ``point`` (Gaussian weights, 12 nearest)."""
    dist = np.linalg.norm(verts - point, axis=1)
    near = np.argsort(dist)[:12]
    row = np.zeros(len(verts))
    row[near] = np.exp(-(dist[near] / sigma) ** 2)
    return row / row.sum()


def _ring_row(body, tube, joint=None, s=None):
    row = np.zeros(NUM_VERTICES)
    ids, w = body.ring_vertices(tube, joint=joint, s=s)
    row[ids] = w
    return row


def _s_at_height(body, tube, y):
    """Arc position on a (roughly vertical) tube where its axis reaches height ``y``."""
    t = body.by_name[tube]
    return float(np.interp(y, t.ring_centres[:, 1], t.ring_s) if t.ring_centres[-1, 1] > t.ring_centres[0, 1]
                 else np.interp(-y, -t.ring_centres[:, 1], t.ring_s))


def _named_rows(body, face_ids):
    """Regressor rows for every landmark name used by the H36M / COCO / extra regressors."""
    v = body.verts
    head_top = v[body.by_name['head'].offset + len(body.by_name['head'].verts) - 1]
    jaw = np.array([0.0, 0.375, 0.075])
    rows = {
        'Pelvis': _ring_row(body, 'torso', joint=0),
        'Pelvis_MPII': _ring_row(body, 'torso', s=_s_at_height(body, 'torso', -0.25)),
        'Torso': _ring_row(body, 'torso', joint=6),
        'Spine_H36M': _ring_row(body, 'torso', s=_s_at_height(body, 'torso', 0.05)),
        'Neck': _ring_row(body, 'head', s=_s_at_height(body, 'head', 0.24)),
        'Thorax_MPII': _ring_row(body, 'head', s=_s_at_height(body, 'head', 0.23)),
        'Neck_LSP': _ring_row(body, 'head', s=_s_at_height(body, 'head', 0.30)),
        'Head_H36M': _ring_row(body, 'head', s=_s_at_height(body, 'head', 0.45)),
        'Head_top': _gaussian_row(v, head_top, 0.03),
        'Jaw_H36M': _gaussian_row(v, jaw, 0.03),
        'Nose': _gaussian_row(v, v[face_ids['nose']], 0.01),
    }
    for side, prefix in (('', 'L_'), ('r_', 'R_')):
        leg, arm = side + 'leg', side + 'arm'
        hip_joint, knee, ankle, shoulder, elbow, wrist = ((1, 4, 7, 16, 18, 20) if side == ''
                                                          else (2, 5, 8, 17, 19, 21))
        hip_s = body.by_name[leg].ring_s[body.by_name[leg].joint_ring[hip_joint]]
        rows[prefix + 'Hip'] = _ring_row(body, leg, s=hip_s + 0.03)
        rows[prefix + 'Knee'] = _ring_row(body, leg, joint=knee)
        rows[prefix + 'Ankle'] = _ring_row(body, leg, joint=ankle)
        rows[prefix + 'Shoulder'] = _ring_row(body, arm, joint=shoulder)
        rows[prefix + 'Elbow'] = _ring_row(body, arm, joint=elbow)
        rows[prefix + 'Wrist'] = _ring_row(body, arm, joint=wrist)
        for part in ('eye', 'ear'):
            key = ('l_' if prefix == 'L_' else 'r_') + part
            rows[prefix + part.capitalize()] = _gaussian_row(v, v[face_ids[key]], 0.01)
    return rows


def _face_keypoints(body):
    """Old (pre-reordering) ids of nose, eyes and ears on the head tube, and their placement."""
    head = body.by_name['head']
    m = head.spec.m

    def ring_vertex(y, direction):
        ring = int(np.argmin(np.abs(head.ring_centres[:, 1] - y)))
        ids = head.offset + 1 + ring * m + np.arange(m)
        offsets = body.verts[ids] - head.ring_centres[ring]
        return int(ids[np.argmax(offsets @ np.asarray(direction))])

    ids = {
        'nose': ring_vertex(0.43, (0.0, 0.0, 1.0)),
        'l_eye': ring_vertex(0.465, (np.sin(0.42), 0.0, np.cos(0.42))),
        'l_ear': ring_vertex(0.45, (1.0, 0.0, -0.1)),
    }
    ids['r_eye'] = int(body.mirror[ids['l_eye']])
    ids['r_ear'] = int(body.mirror[ids['l_ear']])
    assert body.mirror[ids['nose']] == ids['nose']
    return ids


def _sculpt_face(body, ids):
    """A protruding nose and slightly raised eyes/ears so the keypoints stand out."""
    for key, amount in (('nose', 0.022), ('l_eye', 0.006), ('r_eye', 0.006), ('l_ear', 0.012), ('r_ear', 0.012)):
        vid = ids[key]
        radial = body.verts[vid] - body.vertex_centre[vid]
        radial[1] = 0.0
        body.verts[vid] += amount * radial / np.linalg.norm(radial)


def _shape_blendshapes(body, rng):
    """(6890, 3, 10) smooth, mirror-symmetric shape directions (height, girth, proportions...)."""
    v, centre = body.verts, body.vertex_centre
    radial = v - centre
    names = np.empty(NUM_VERTICES, dtype=object)
    for tube in body.tubes:
        names[tube.offset:tube.offset + len(tube.verts)] = tube.spec.name.replace('r_', '')
    is_part = {name: (names == name)[:, None] for name in ('torso', 'head', 'leg', 'arm', 'foot')}
    x, y, z = v[:, 0:1], v[:, 1:2], v[:, 2:3]
    zeros = np.zeros_like(x)
    lower = (_smoothstep((-0.25 - y) / 0.15))
    dirs = [
        0.05 * v,                                                       # overall size
        0.12 * radial,                                                  # girth
        np.concatenate([zeros, 0.05 * (y + 0.22), zeros], 1),          # height
        np.concatenate([0.04 * np.sign(x) * _smoothstep((np.abs(x) - 0.1) / 0.1)
                        * _smoothstep((y + 0.0) / 0.15), zeros, zeros], 1),  # shoulder span
        np.concatenate([zeros, 0.06 * np.minimum(y + 0.3, 0.0), zeros], 1),  # leg length
        np.concatenate([zeros, zeros, 0.03 * np.maximum(radial[:, 2:3] / 0.1, 0)
                        * np.exp(-((y + 0.05) / 0.12) ** 2) * is_part['torso']], 1),  # belly
        0.12 * (v - np.array([0.0, 0.45, 0.02])) * is_part['head'] * _smoothstep((y - 0.33) / 0.05),  # head size
        np.concatenate([0.1 * x * lower + 0.03 * np.sign(x) * lower * is_part['leg'], zeros, zeros], 1),  # hips
        np.concatenate([zeros, 0.04 * np.maximum(y + 0.22, 0.0), zeros], 1),  # torso length
    ]
    freq = rng.normal(size=(3, 3)) * 2.0
    phase = rng.uniform(0, 2 * np.pi, size=3)
    amp = rng.normal(size=(3, 3)) * 0.004
    field_ = np.stack([np.cos(np.column_stack([np.abs(x[:, 0]), y[:, 0], z[:, 0]]) @ freq[i] + phase[i])
                       for i in range(3)], 1) @ amp
    # The symmetrisation in build_synthetic_model makes this field mirror-symmetric.
    dirs.append(field_ + np.concatenate([0.01 * x, zeros, zeros], 1))
    shapedirs = np.stack(dirs, axis=-1)
    scales = 1.0 + 0.1 * rng.standard_normal(10)
    return shapedirs * scales


def _pose_blendshapes(body, weights, rng):
    """(6890, 3, 207) small pose correctives: bulges along the surface normal near each joint."""
    radial = body.verts - body.vertex_centre
    norm = np.linalg.norm(radial, axis=1, keepdims=True)
    normal = np.divide(radial, norm, out=np.zeros_like(radial), where=norm > 1e-9)
    posedirs = np.zeros((NUM_VERTICES, 3, NUM_JOINTS - 1, 9))
    coeff = rng.normal(scale=0.004, size=(NUM_JOINTS - 1, 9))
    for k in range(1, NUM_JOINTS):
        blend = 4.0 * weights[:, k] * weights[:, PARENTS[k]]
        posedirs[:, :, k - 1, :] = (blend[:, None] * normal)[:, :, None] * coeff[k - 1][None, None, :]
    return posedirs.reshape(NUM_VERTICES, 3, 9 * (NUM_JOINTS - 1))


# ----------------------------------------------------------------------------- mirror symmetry
def _symmetrize_vertices(arr, mirror):
    """Average (V, 3, ...) per-vertex vectors with their mirror images (exactly symmetric after)."""
    sign = MIRROR_SIGN.reshape((1, 3) + (1,) * (arr.ndim - 2))
    return 0.5 * (arr + sign * arr[mirror])


def _symmetrize_posedirs(posedirs, mirror):
    p = posedirs.reshape(NUM_VERTICES, 3, NUM_JOINTS - 1, 3, 3)
    flip = JOINT_FLIP[1:] - 1
    s = MIRROR_SIGN
    mirrored = p[mirror][:, :, flip] * s[None, :, None, None, None] * s[None, None, None, :, None] \
        * s[None, None, None, None, :]
    return (0.5 * (p + mirrored)).reshape(posedirs.shape)


def _symmetrize_rows(rows, mirror, flip):
    """Average regressor/weight rows (R, V) with their mirror (rows permuted by ``flip``)."""
    return 0.5 * (rows + rows[flip][:, mirror])


# ----------------------------------------------------------------------------- assembly
GENDER_BUILD = {
    'neutral': dict(scale=1.0, width={}),
    'male': dict(scale=1.04, width={'torso': 1.04, 'arm': 1.05, 'leg': 1.0}),
    'female': dict(scale=0.96, width={'torso': 0.97, 'arm': 0.95, 'leg': 1.04}),
}


def _reorder(num, targets):
    """New->old vertex order putting old vertex ``targets[new_id]`` at ``new_id``, others in order."""
    order = np.full(num, -1, dtype=np.int64)
    for new_id, old_id in targets.items():
        order[new_id] = old_id
    rest = np.setdiff1d(np.arange(num), np.array(list(targets.values())))
    order[order < 0] = rest
    return order


def _flip_index(names):
    index = {n: i for i, n in enumerate(names)}

    def partner(n):
        for a, b in (('L_', 'R_'), ('R_', 'L_')):
            if n.startswith(a):
                return b + n[2:]
        return n
    return np.array([index[partner(n)] for n in names])


def neutral_topology():
    """Faces (joined tubes) and face-keypoint vertex ids of the neutral body, shared by all genders."""
    body = Body(**GENDER_BUILD['neutral'])
    return {'faces': body.faces, 'face_ids': _face_keypoints(body)}


def build_synthetic_model(gender='neutral', seed=0, topology=None):
    """The synthetic model of one gender (``topology``: ``neutral_topology()``, computed if None).

    Returns ``(model, extras)``: ``model`` holds the pkl fields; ``extras`` holds the vertex
    mirror map (6890,) and the H36M / COCO / extra regressors (float64, rows summing to 1).
    """
    rng = np.random.default_rng([seed, 7])  # same random shapes for every gender of one seed
    # All genders share the neutral body's faces and vertex order, as the official files do.
    topology = topology or neutral_topology()
    body = Body(**GENDER_BUILD[gender], faces=topology['faces'])
    face_ids = topology['face_ids']
    _sculpt_face(body, face_ids)
    mirror = body.mirror

    verts = _symmetrize_vertices(body.verts, mirror)
    body.verts = verts
    weights = _skinning_weights(body)
    weights = _symmetrize_rows(weights.T, mirror, JOINT_FLIP).T
    weights /= weights.sum(axis=1, keepdims=True)
    j_reg = _symmetrize_rows(_joint_regressor(body), mirror, JOINT_FLIP)
    shapedirs = _symmetrize_vertices(_shape_blendshapes(body, rng), mirror)
    posedirs = _symmetrize_posedirs(_pose_blendshapes(body, weights, rng), mirror)

    rows = _named_rows(body, face_ids)
    regressors = {}
    for key, names in (('h36m', H36M_JOINTS), ('coco', COCO_JOINTS), ('extra', EXTRA_JOINTS)):
        stacked = np.stack([rows[n] for n in names])
        regressors[key] = _symmetrize_rows(stacked, mirror, _flip_index(names))

    order = _reorder(NUM_VERTICES, {FACE_KPS_VERTEX[k]: face_ids[k] for k in FACE_KPS_VERTEX})
    old_to_new = np.argsort(order)
    faces = old_to_new[body.faces]
    mirror_new = old_to_new[mirror[order]]
    assert faces.shape == (NUM_FACES, 3), faces.shape

    j_reg = j_reg[:, order]
    v_template = verts[order]
    model = {
        'v_template': v_template,
        'shapedirs': shapedirs[order],
        'posedirs': posedirs[order],
        'J_regressor': scipy.sparse.csc_matrix(j_reg),
        'weights': weights[order],
        'kintree_table': np.array([PARENTS, list(range(NUM_JOINTS))], dtype=np.int64),
        'f': faces.astype(np.uint32),
        'J': j_reg @ v_template,
        'bs_type': 'lrotmin',
        'bs_style': 'lbs',
    }
    extras = {'mirror_index': mirror_new}
    extras.update({key: reg[:, order] for key, reg in regressors.items()})
    return model, extras


def make_synthetic_smpl(out_dir, seed=0):
    """Write the three synthetic SMPL pkl files and the regressor ``.npy`` files into ``out_dir``.

    Files: ``basicModel_{neutral,m,f}_lbs_10_207_0_v1.0.0.pkl``, ``J_regressor_extra.npy`` (9,6890),
    ``J_regressor_h36m_correct.npy`` (17,6890), ``J_regressor_coco_hip_smpl.npy`` (17,6890) and
    ``vertex_mirror_index.npy`` (6890,) int64 (vertex i mirrors to mirror[i] under x -> -x).
    Returns ``out_dir`` as a Path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    topology = neutral_topology()
    for gender, file_name in MODEL_FILES.items():
        model, extras = build_synthetic_model(gender, seed, topology)
        with open(out_dir / file_name, 'wb') as handle:
            pickle.dump(model, handle, protocol=2)
        if gender == 'neutral':
            np.save(out_dir / 'J_regressor_extra.npy', extras['extra'])
            np.save(out_dir / 'J_regressor_h36m_correct.npy', extras['h36m'])
            np.save(out_dir / 'J_regressor_coco_hip_smpl.npy', extras['coco'])
            np.save(out_dir / MIRROR_INDEX_FILE, extras['mirror_index'])
    return out_dir
