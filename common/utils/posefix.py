"""PoseFix-style synthetic 2D-pose errors for training inputs.

See docs/METHOD.md, "Augmentation and pose synthesis".

Emulates a bottom-up 2D pose estimator's mistakes on a COCO-17 pose in crop pixels:
jitter, missed joints, left/right inversion, swaps with nearby people, or a "good"
small displacement, chosen per joint with probabilities depending on the number of
valid joints and of overlapping people.  Error magnitudes are keypoint-similarity
radii (COCO OKS constants, box area in crop pixels²).
"""
import functools
import math

import numpy as np

from common.utils.joints import COCO17
from common.utils.preprocessing import apply_affine

NUM_COCO_JOINTS = len(COCO17)
# COCO OKS per-keypoint constants.
COCO_OKS_SIGMAS = np.array([0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62,
                            1.07, 1.07, 0.87, 0.87, 0.89, 0.89]) / 10.0


def _partners(num_joints, flip_pairs):
    """(num_joints,) int array: the left/right partner of each joint (-1: none)."""
    partner = np.full(num_joints, -1)
    for left, right in flip_pairs:
        partner[left], partner[right] = right, left
    return partner


# Symmetric partner of each COCO joint (-1: none).
COCO_PARTNER = _partners(NUM_COCO_JOINTS, COCO17.flip_pairs)

ERROR_TYPES = ('jitter', 'miss', 'inversion', 'swap', 'good')
SIMILARITY_LEVELS = (0.85, 0.5, 0.1)

# Ring-sampling sample counts per centre.
NUM_JITTER, NUM_MISS, NUM_INVERSION, NUM_SWAP, NUM_GOOD = 500, 2000, 500, 500, 125


def _group_values(groups, values):
    """(17,) array: values[g] for every joint of group g (groups: tuple of index lists)."""
    out = np.empty(NUM_COCO_JOINTS)
    for members, value in zip(groups, values):
        out[list(members)] = value
    return out


_JITTER_GROUPS = ((0, 13, 14, 15, 16), range(1, 11), (11, 12))
_MISS_GROUPS = (range(0, 5), (5, 6, 15, 16), range(7, 15))
_BODY_GROUPS = (range(0, 5), range(5, 11), range(11, 17))   # face, upper, lower


def error_probabilities(n_valid, num_overlap):
    """Nominal per-joint probabilities (17, 5) of [jitter, miss, inversion, swap, good].

    n_valid: number of valid input joints among the 17; num_overlap: number of
    neighbours.  Per-joint error-type table; ``good = 1 - sum(others)`` (>= 0.34).
    """
    jitter = _group_values(_JITTER_GROUPS, (0.15, 0.20, 0.25) if n_valid <= 10 else (0.10, 0.15, 0.20))
    if n_valid <= 5:
        miss = _group_values(_MISS_GROUPS, (0.15, 0.20, 0.25))
    elif n_valid <= 10:
        miss = _group_values(_MISS_GROUPS, (0.10, 0.13, 0.15))
    else:
        miss = _group_values(_MISS_GROUPS, (0.02, 0.05, 0.10))
    inversion = _group_values(_BODY_GROUPS, (0.01, 0.03, 0.06))
    crowded = (n_valid <= 10 and num_overlap > 0) or (n_valid <= 15 and num_overlap >= 3)
    swap = _group_values(_BODY_GROUPS, (0.02, 0.15, 0.10) if crowded else (0.01, 0.06, 0.03))
    good = 1.0 - (jitter + miss + inversion + swap)
    assert np.all(good >= 0), "error probabilities exceed 1"
    return np.stack([jitter, miss, inversion, swap, good], axis=1)


def keypoint_distance_levels(tight_bbox, img2bb):
    """Distances (d85, d50, d10), each (17,) crop pixels, at OKS similarity 0.85, 0.5, 0.1.

    The box area ``A`` is |top edge| x |right edge| of the tight box mapped through
    img2bb; ``d_k(j) = sqrt(-2 A (2 sigma_j)^2 ln k)``.
    """
    x, y, w, h = (float(v) for v in np.asarray(tight_bbox).reshape(4))
    corners = apply_affine(np.array([[x, y], [x + w, y], [x + w, y + h]], dtype=np.float32), img2bb)
    corners = corners.astype(np.float64)
    area = np.linalg.norm(corners[1] - corners[0]) * np.linalg.norm(corners[2] - corners[1])
    variance = area * (2 * COCO_OKS_SIGMAS) ** 2
    return tuple(np.sqrt(-2.0 * variance * math.log(level)) for level in SIMILARITY_LEVELS)


def _rings(rng, centres, num, r_low, r_high):
    """Ring-sampling draws around each of ``centres`` (m, 2).

    Draws ``rng.uniform(0, 2pi, (m, num))`` angles, then ``rng.uniform(r_low, r_high,
    (m, num))`` radii (row i belongs to centre i).  Sample (i, s) is the point
    ``centres[i] + radii[i, s] * (cos angles[i, s], sin angles[i, s])``; points are
    computed lazily, only where a distance test or the final pick needs them.
    Returns (centres, angles, radii).
    """
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    angles = rng.uniform(0.0, 2.0 * math.pi, (len(centres), num))
    radii = rng.uniform(r_low, r_high, (len(centres), num))
    return centres, angles, radii


# Float32 screening: a squared distance computed in float32 from centre-relative offsets
# errs by < 1e-5 (L^2 + t^2) (L = radius + centre-reference distance); decisions closer
# than this relative margin to the threshold are redone exactly in float64.
SCREEN_MARGIN = 1e-4


@functools.lru_cache(maxsize=None)
def _all_samples(num):
    """Read-only ``arange(num)``: the survivors of a ring no reference can reach."""
    indices = np.arange(num)
    indices.setflags(write=False)
    return indices


def _survivors(rings, r_high, cands, cand_dist, ref_mask, threshold=None):
    """Per ring row, the sorted indices of the samples p with ``|p - c| > t`` for every reference c.

    rings from ``_rings`` with radii below ``r_high``; cands (m, 2) candidate points;
    cand_dist (rows, m) distances from each ring centre to each candidate; ref_mask
    (rows, m) bool selects each row's references among the candidates; ``t`` is the
    scalar ``threshold``, or each sample's own radius when None.

    The result equals the straightforward float64 test (points ``centre + r (cos a,
    sin a)``, squared distances against ``t^2``), computed faster: references too far
    from a row's centre to reject any sample are skipped (triangle inequality with the
    radius bound), the others are screened in float32 (SIMD trigonometry) and only
    samples within the screening margin of the threshold are re-tested in float64.
    """
    centres, angles, radii = rings
    reach = (2.0 * r_high if threshold is None else r_high + threshold) * (1 + 1e-9) + 1e-9
    near = ref_mask & (cand_dist <= reach)
    if not near.any():
        return [_all_samples(angles.shape[1])] * len(centres)
    delta = cands[None, :, :] - centres[:, None, :]                        # (m, k, 2)
    limit = radii ** 2 if threshold is None else np.float64(threshold) ** 2
    max_limit = r_high ** 2 if threshold is None else limit
    margin = np.float32(SCREEN_MARGIN * ((r_high + np.max(cand_dist, where=near, initial=0.0)) ** 2 + max_limit))
    # float32 screening of every (row, reference, sample) triple; ignored pairs sit far away.
    ang32 = angles.astype(np.float32)
    rad32 = radii.astype(np.float32)
    delta32 = np.where(near[..., None], delta, 1e6).astype(np.float32)
    dx = (rad32 * np.cos(ang32))[:, None, :] - delta32[:, :, 0:1]
    dy = (rad32 * np.sin(ang32))[:, None, :] - delta32[:, :, 1:2]
    np.multiply(dx, dx, out=dx)
    np.multiply(dy, dy, out=dy)
    np.add(dx, dy, out=dx)
    excess = dx.min(axis=1) - np.asarray(limit, dtype=np.float32)          # (m, num)
    far = excess > margin
    redo_r, redo_s = np.nonzero(np.abs(excess) <= margin)
    if len(redo_r):
        a, r = angles[redo_r, redo_s], radii[redo_r, redo_s]
        px = centres[redo_r, 0] + r * np.cos(a)
        py = centres[redo_r, 1] + r * np.sin(a)
        ddx = px[:, None] - cands[None, :, 0]
        ddy = py[:, None] - cands[None, :, 1]
        lim = limit[redo_r, redo_s, None] if threshold is None else limit
        far[redo_r, redo_s] = ((ddx * ddx + ddy * ddy > lim) | ~near[redo_r]).all(axis=1)
    return [np.flatnonzero(row) for row in far]


def _pick(rng, pool):
    """Uniform pick over a pool [(rings, row, sample indices), ...]: one ``rng.integers(total)``.

    Returns the point (2,), or None (and no draw) when the pool is empty.
    """
    total = sum(len(indices) for _, _, indices in pool)
    if total == 0:
        return None
    k = int(rng.integers(total))
    for (centres, angles, radii), row, indices in pool:
        if k < len(indices):
            s = indices[k]
            angle, radius = angles[row, s], radii[row, s]
            return np.array([centres[row, 0] + radius * np.cos(angle), centres[row, 1] + radius * np.sin(angle)])
        k -= len(indices)
    raise AssertionError("unreachable")


class _JointCandidates:
    """Candidate points C = [g] + S + I + SI (m, 2) of one joint, their pairwise
    distances (m, m), the index i_I = 1 + |S| and whether I is present."""

    def __init__(self, points, inv_index, has_inversion):
        self.points = points
        self.dist = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(axis=-1))
        self.inv_index = inv_index
        self.has_inversion = has_inversion

    def __len__(self):
        return len(self.points)

    def others(self, centre):
        """(1, m) reference mask: every candidate but ``centre``."""
        mask = np.ones((1, len(self)), dtype=bool)
        mask[0, centre] = False
        return mask

    def survivors(self, rings, r_high, centre_idx, ref_mask, threshold=None):
        """``_survivors`` for rings around the candidates ``centre_idx``."""
        return _survivors(rings, r_high, self.points, self.dist[centre_idx], ref_mask, threshold)


def _propose_jitter(rng, cands, d85, d50):
    """Jitter: around g at [d85, d50), farther than its radius from every other candidate."""
    rings = _rings(rng, cands.points[:1], NUM_JITTER, d85, d50)
    return _pick(rng, [(rings, 0, cands.survivors(rings, d50, [0], cands.others(0))[0])])


def _propose_miss(rng, cands, d50, d10):
    """Miss: around every candidate at [d50, d10), farther than d50 from the others;
    all survivors around g, floor(m/4) drawn with replacement around each other centre."""
    rings = _rings(rng, cands.points, NUM_MISS, d50, d10)
    kept = cands.survivors(rings, d10, slice(None), ~np.eye(len(cands), dtype=bool), d50)
    pool = [(rings, 0, kept[0])]
    for index, survivors in enumerate(kept[1:], start=1):
        if len(survivors) // 4 > 0:
            pool.append((rings, index, survivors[rng.integers(len(survivors), size=len(survivors) // 4)]))
    # A pool of only subsampled-away survivors is empty: treated as unavailable (a fix; docs/METHOD.md, "Differences from the original").
    return _pick(rng, pool)


def _propose_inversion(rng, cands, d50):
    """Inversion: around the partner I at [0, d50), farther than its radius from the others."""
    inv = cands.inv_index
    rings = _rings(rng, cands.points[inv:inv + 1], NUM_INVERSION, 0.0, d50)
    return _pick(rng, [(rings, 0, cands.survivors(rings, d50, [inv], cands.others(inv))[0])])


def _propose_swap(rng, cands, d50):
    """Swap: around every candidate but C[0] and C[i_I] at [0, d50), farther than its radius
    from C[0] and (if it exists) C[i_I]."""
    inv = cands.inv_index
    centre_idx = [index for index in range(1, len(cands)) if index != inv]
    ref_mask = np.zeros((len(centre_idx), len(cands)), dtype=bool)
    ref_mask[:, 0] = True
    if inv < len(cands):
        ref_mask[:, inv] = True
    rings = _rings(rng, cands.points[centre_idx], NUM_SWAP, 0.0, d50)
    kept = cands.survivors(rings, d50, centre_idx, ref_mask)
    return _pick(rng, [(rings, row, kept[row]) for row in range(len(centre_idx))])


def _propose_good(rng, cands, d85):
    """Good: around g at [0, d85), farther than its radius from every other candidate."""
    rings = _rings(rng, cands.points[:1], NUM_GOOD, 0.0, d85)
    return _pick(rng, [(rings, 0, cands.survivors(rings, d85, [0], cands.others(0))[0])])


def _candidates(j, synth, src_valid, near):
    """``_JointCandidates`` C = [g] + S + I + SI for joint j.

    synth (17, 3) current output rows; src_valid (17,) input validity; near (K, 17, 3).
    """
    partner = COCO_PARTNER[j]
    parts = [synth[j:j + 1, :2], near[near[:, j, 2] > 0, j, :2]]
    has_inversion = bool(partner >= 0 and src_valid[partner] > 0)
    if has_inversion:
        parts.append(synth[partner:partner + 1, :2])
    if partner >= 0:
        parts.append(near[near[:, partner, 2] > 0, partner, :2])
    return _JointCandidates(np.concatenate(parts, axis=0), 1 + len(parts[1]), has_inversion)


def synthesize_joint(j, synth, src_valid, near, levels, probs, rng):
    """Synthesised row ``[x, y, flag]`` (float64) for COCO joint j (one step of ``synthesize_pose``).

    synth (17, 3) output rows so far; src_valid (17,) input validity; near (K, 17, 3)
    neighbours; levels (d85, d50, d10) of (17,); probs (5,) nominal probabilities.
    Also returns the chosen error type index (0..4, or -1 when none was available).
    """
    d85, d50, d10 = (float(level[j]) for level in levels)
    cands = _candidates(j, synth, src_valid, near)
    proposals = [
        _propose_jitter(rng, cands, d85, d50),
        _propose_miss(rng, cands, d50, d10),
        _propose_inversion(rng, cands, d50) if cands.has_inversion else None,
        _propose_swap(rng, cands, d50) if len(cands) > 1 + cands.has_inversion else None,
        _propose_good(rng, cands, d85),
    ]
    available = np.array([proposal is not None for proposal in proposals])
    weights = np.where(available, probs, 0.0)
    if weights.sum() <= 0:
        return np.zeros(3), -1
    chosen = int(rng.choice(len(ERROR_TYPES), p=weights / weights.sum()))
    x, y = proposals[chosen]
    return np.array([x, y, 1.0]), chosen


def synthesize_pose(joints, near_joints, tight_bbox, num_overlap, img2bb, rng, return_types=False):
    """Corrupt the first 17 (COCO-17) rows of a crop-space pose.

    joints (J>=17, 3) ``[x, y, valid]`` crop pixels; near_joints (K, >=17, 3) neighbours
    in crop pixels (``zeros((1, J, 3))`` when none; rows with valid <= 0 are ignored);
    tight_bbox ``[x, y, w, h]`` original pixels; num_overlap int; img2bb (2, 3);
    rng ``np.random.Generator``.
    Returns a new (J, 3) array of the input's float dtype: rows 0-16 replaced by
    ``[x, y, 1]`` (``[0, 0, 0]`` when no error type is available), further rows
    untouched.  ``return_types=True`` also returns the (17,) chosen type indices
    (``ERROR_TYPES`` order; -1 = none available).

    Joints are processed in order 0..16 (the inversion candidate of joint j is the
    partner's row as already synthesised).  Candidates C = [g] + S + I + SI as in
    docs/METHOD.md, "Augmentation and pose synthesis".  Random draws from ``rng`` per joint, in this order, where
    ``rings(m centres, n, lo, hi)`` = ``rng.uniform(0, 2pi, (m, n))`` angles, then
    ``rng.uniform(lo, hi, (m, n))`` radii (row i for centre i):
      1. jitter: rings(g, 500, d85, d50); if survivors: ``rng.integers(m)``;
      2. miss: rings(all of C in order, 2000, d50, d10); then for each centre i >= 1
         in order with ``m_i // 4 > 0`` survivors: ``rng.integers(m_i, size=m_i // 4)``
         (subsample with replacement); then if the pool (all survivors of centre 0,
         then the subsamples) is non-empty: ``rng.integers(len(pool))``;
      3. inversion (only if I exists): rings(I, 500, 0, d50); if survivors: ``rng.integers(m)``;
      4. swap (only if S or SI is non-empty): rings(C[i] for i >= 1, i != i_I, in
         order, 500, 0, d50); if the pooled survivors are non-empty:
         ``rng.integers(len(pool))``;
      5. good: rings(g, 125, 0, d85); if survivors: ``rng.integers(m)``;
      6. if any proposal is available: ``rng.choice(5, p=renormalised probabilities)``
         (one ``rng.random()``), order [jitter, miss, inversion, swap, good].
    Pools are ordered by centre, then by sample index.  Distance tests compare
    squared distances.
    """
    joints = np.asarray(joints)
    out_dtype = joints.dtype if np.issubdtype(joints.dtype, np.floating) else np.float32
    out = np.array(joints, dtype=out_dtype, copy=True)
    synth = joints[:NUM_COCO_JOINTS].astype(np.float64)
    src_valid = synth[:, 2].copy()
    near = np.asarray(near_joints, dtype=np.float64)
    near = near.reshape((-1,) + near.shape[-2:])[:, :NUM_COCO_JOINTS]
    levels = keypoint_distance_levels(tight_bbox, img2bb)
    probs = error_probabilities(int((src_valid > 0).sum()), num_overlap)
    types = np.empty(NUM_COCO_JOINTS, dtype=np.int64)
    for j in range(NUM_COCO_JOINTS):
        row, types[j] = synthesize_joint(j, synth, src_valid, near, levels, probs[j], rng)
        # Stored at the output's precision: later joints see the row as the output holds it.
        synth[j] = row.astype(out_dtype)
    out[:NUM_COCO_JOINTS] = synth
    return (out, types) if return_types else out
