"""PoseFix-style synthetic 2D-pose errors (docs/METHOD.md, "Augmentation and pose synthesis")."""
import math

import numpy as np
import pytest

from common.utils.posefix import error_probabilities, keypoint_distance_levels, synthesize_pose

IDENTITY = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10
PARTNER = {1: 2, 2: 1, 3: 4, 4: 3, 5: 6, 6: 5, 7: 8, 8: 7, 9: 10, 10: 9, 11: 12, 12: 11, 13: 14, 14: 13,
           15: 16, 16: 15}


def nominal_table(n_valid, num_overlap):
    """Straight transcription of the error-type probability table: rows jitter, miss, inv, swap."""
    def by(groups):
        out = np.zeros(17)
        for members, value in groups:
            out[list(members)] = value
        return out
    face, upper, lower = range(0, 5), range(5, 11), range(11, 17)
    jit = (0.15, 0.20, 0.25) if n_valid <= 10 else (0.10, 0.15, 0.20)
    jitter = by([((0, 13, 14, 15, 16), jit[0]), (range(1, 11), jit[1]), ((11, 12), jit[2])])
    miss_v = (0.15, 0.20, 0.25) if n_valid <= 5 else (0.10, 0.13, 0.15) if n_valid <= 10 else (0.02, 0.05, 0.10)
    miss = by([(face, miss_v[0]), ((5, 6, 15, 16), miss_v[1]), (range(7, 15), miss_v[2])])
    inv = by([(face, 0.01), (upper, 0.03), (lower, 0.06)])
    crowded = (n_valid <= 10 and num_overlap > 0) or (n_valid <= 15 and num_overlap >= 3)
    swap_v = (0.02, 0.15, 0.10) if crowded else (0.01, 0.06, 0.03)
    swap = by([(face, swap_v[0]), (upper, swap_v[1]), (lower, swap_v[2])])
    return np.stack([jitter, miss, inv, swap])


def test_distance_levels_worked_example():
    d85, d50, d10 = keypoint_distance_levels([0, 0, 100, 100], IDENTITY)
    assert d50[0] == pytest.approx(math.sqrt(-2 * 10000 * 0.052 ** 2 * math.log(0.5)))
    assert d50[0] == pytest.approx(6.12, abs=0.01)
    assert np.all(d85 < d50) and np.all(d50 < d10)
    # The area is measured in crop pixels: a x2 crop scale doubles every distance.
    scaled = keypoint_distance_levels([0, 0, 100, 100], IDENTITY * np.float32([[2], [2]]))
    np.testing.assert_allclose(scaled[1], 2 * d50)


@pytest.mark.parametrize('n_valid,num_overlap', [(3, 0), (8, 1), (8, 0), (12, 3), (17, 5), (14, 2)])
def test_probability_table(n_valid, num_overlap):
    probs = error_probabilities(n_valid, num_overlap)
    expected = nominal_table(n_valid, num_overlap)
    np.testing.assert_allclose(probs[:, :4].T, expected)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert probs[:, 4].min() >= 0.34 - 1e-12


def spread_pose():
    """Joints 50 px apart on a line; a neighbour 500 px below (all candidates far apart)."""
    joints = np.zeros((18, 3), np.float32)
    joints[:17, 0] = 50 * np.arange(17)
    joints[:, 2] = 1
    joints[17, :2] = (-7, -9)           # an extra row (COCO-18 pelvis) must stay untouched
    near = joints[None, :17].copy()
    near[0, :, 1] += 500
    return joints, near


def classify(out, joints, near, levels, j):
    """Error type of synthesised row j from its geometry alone (candidates far apart).

    The inversion candidate is the partner as already synthesised when it comes first.
    """
    d85, d50, d10 = (level[j] for level in levels)
    out_xy = out[j, :2].astype(np.float64)
    g = joints[j, :2]
    cands = {'g': g, 'S': near[0, j, :2]}   # neighbours by position, valid or not
    if j in PARTNER and joints[PARTNER[j], 2] > 0:
        cands['I'] = (out if PARTNER[j] < j else joints)[PARTNER[j], :2].astype(np.float64)
    if j in PARTNER:
        cands['SI'] = near[0, PARTNER[j], :2]
    dists = {name: np.linalg.norm(out_xy - point) for name, point in cands.items()}
    nearest = min(dists, key=dists.get)
    dist = dists[nearest]
    if dist >= d50:
        assert dist < d10 + 1e-6
        return 'miss'
    if nearest == 'g':
        return 'good' if dist < d85 else 'jitter'
    return 'inversion' if nearest == 'I' else 'swap'


@pytest.mark.slow
def test_error_type_frequencies():
    joints, near = spread_pose()
    tight_bbox = [0, 0, 40, 40]         # A = 1600 px²: d10 <= 18.4 px << 50 px spacing
    levels = keypoint_distance_levels(tight_bbox, IDENTITY)
    num_draws = 160
    rng = np.random.default_rng(2024)
    types = ('jitter', 'miss', 'inversion', 'swap', 'good')
    counts = {name: 0 for name in types}
    for _ in range(num_draws):
        out = synthesize_pose(joints, near, tight_bbox, 1, IDENTITY, rng)
        assert np.array_equal(out[17], joints[17]) and np.all(out[:17, 2] == 1)
        for j in range(17):
            counts[classify(out, joints, near, levels, j)] += 1
    nominal = nominal_table(17, 1)
    probs = np.vstack([nominal, 1 - nominal.sum(axis=0)])        # (5, 17)
    probs[2, 0] = 0                                               # the nose has no inversion partner
    probs /= probs.sum(axis=0, keepdims=True)
    expected = num_draws * probs.sum(axis=1)
    variance = num_draws * (probs * (1 - probs)).sum(axis=1)
    for index, name in enumerate(types):
        assert abs(counts[name] - expected[index]) < 4.5 * math.sqrt(variance[index]) + 2, (name, counts, expected)
        assert counts[name] > 0


def test_invalid_neighbour_joints_never_swap_and_invalid_partner_never_inverts():
    joints, near = spread_pose()
    near[0, :, 2] = 0                   # no usable neighbour joint
    joints[1::2, 2] = 0                 # left joints invalid -> right joints have no inversion partner
    tight_bbox = [0, 0, 40, 40]
    levels = keypoint_distance_levels(tight_bbox, IDENTITY)
    rng = np.random.default_rng(7)
    seen = set()
    for _ in range(60):
        out = synthesize_pose(joints, near, tight_bbox, 0, IDENTITY, rng)
        for j in range(17):
            kind = classify(out, joints, near, levels, j)
            seen.add(kind)
            assert kind != 'swap'
            if j % 2 == 0 and j > 0:
                assert kind != 'inversion'
    assert {'good', 'jitter', 'miss', 'inversion'} <= seen   # left joints still invert
    # Invalid input joints are processed like the others: flag 1 in the output.
    assert np.all(out[:17, 2] == 1)


def test_deterministic_and_non_mutating():
    joints, near = spread_pose()
    near = near.copy()
    near[0, :, :2] = joints[:17, :2] + 12   # close neighbour: distance tests really run
    before = joints.copy(), near.copy()
    out1 = synthesize_pose(joints, near, [0, 0, 90, 120], 1, IDENTITY, np.random.default_rng(11))
    out2 = synthesize_pose(joints, near, [0, 0, 90, 120], 1, IDENTITY, np.random.default_rng(11))
    out3 = synthesize_pose(joints, near, [0, 0, 90, 120], 1, IDENTITY, np.random.default_rng(12))
    np.testing.assert_array_equal(out1, out2)
    assert not np.array_equal(out1, out3)
    assert out1.dtype == np.float32 and out1.shape == (18, 3)
    np.testing.assert_array_equal(joints, before[0])
    np.testing.assert_array_equal(near, before[1])


def test_close_candidates_respect_distance_rules():
    """With crowded candidates every output still obeys its type's geometric rule:
    within d10 of some candidate, and never closer to another candidate than allowed."""
    rng = np.random.default_rng(3)
    joints = np.zeros((17, 3), np.float32)
    joints[:, :2] = rng.uniform(100, 140, (17, 2))
    joints[:, 2] = 1
    near = np.ones((2, 17, 3), np.float32)
    near[:, :, :2] = joints[None, :, :2] + rng.normal(0, 6, (2, 17, 2))
    levels = keypoint_distance_levels([0, 0, 60, 80], IDENTITY)
    for _ in range(5):
        out = synthesize_pose(joints, near, [0, 0, 60, 80], 2, IDENTITY, rng)
        for j in range(17):
            cands = [joints[j, :2]] + [n[j, :2] for n in near]
            if j in PARTNER:
                cands += [out[PARTNER[j], :2] if PARTNER[j] < j else joints[PARTNER[j], :2]]
                cands += [n[PARTNER[j], :2] for n in near]
            dist = min(np.linalg.norm(out[j, :2] - c) for c in cands)
            assert dist < levels[2][j] + 1e-4


# ------------------------------------------------- straightforward re-derivation
def reference_synthesis(joints, near, tight_bbox, num_overlap, img2bb, rng):
    """Plain per-ring implementation of the synthesiser following the documented draw order
    (no pruning, Euclidean norms, one candidate list per joint)."""
    d85s, d50s, d10s = keypoint_distance_levels(tight_bbox, img2bb)
    out = np.array(joints, np.float32, copy=True)
    valid = out[:17, 2].astype(np.float64).copy()
    near = np.asarray(near, np.float64)[:, :17]
    probs = nominal_table(int((valid > 0).sum()), num_overlap)
    probs = np.vstack([probs, 1 - probs.sum(axis=0)])

    def ring(centres, n, lo, hi):
        angles = rng.uniform(0, 2 * np.pi, (len(centres), n))
        radii = rng.uniform(lo, hi, (len(centres), n))
        points = np.stack([np.asarray(centres)[:, None, 0] + radii * np.cos(angles),
                           np.asarray(centres)[:, None, 1] + radii * np.sin(angles)], axis=-1)
        return points, radii

    def far(points, radii, others):
        ok = np.ones(len(points), bool)
        for other in others:
            ok &= np.linalg.norm(points - other, axis=1) > radii
        return ok

    def pick(pool):
        return pool[rng.integers(len(pool))] if len(pool) else None

    for j in range(17):
        d85, d50, d10 = d85s[j], d50s[j], d10s[j]
        g = out[j, :2].astype(np.float64)
        S = [n[j, :2] for n in near if n[j, 2] > 0]
        has_i = j in PARTNER and valid[PARTNER[j]] > 0
        I = [out[PARTNER[j], :2].astype(np.float64)] if has_i else []
        SI = [n[PARTNER[j], :2] for n in near if n[PARTNER[j], 2] > 0] if j in PARTNER else []
        C = [g] + S + I + SI
        i_inv = 1 + len(S)
        proposals = []
        pts, rad = ring([g], 500, d85, d50)
        proposals.append(pick(pts[0][far(pts[0], rad[0], C[1:])]))
        pts, rad = ring(C, 2000, d50, d10)
        kept = [pts[i][far(pts[i], np.full(2000, d50), C[:i] + C[i + 1:])] for i in range(len(C))]
        pool = list(kept[0])
        for i in range(1, len(C)):
            if len(kept[i]) // 4:
                pool += list(kept[i][rng.integers(len(kept[i]), size=len(kept[i]) // 4)])
        proposals.append(pick(pool))
        if has_i:
            pts, rad = ring([C[i_inv]], 500, 0, d50)
            proposals.append(pick(pts[0][far(pts[0], rad[0], C[:i_inv] + C[i_inv + 1:])]))
        else:
            proposals.append(None)
        centres = [C[i] for i in range(1, len(C)) if i != i_inv]
        if centres:     # S or SI non-empty, and not only the quirk-excluded C[i_I]
            refs = [C[0]] + ([C[i_inv]] if i_inv < len(C) else [])
            pts, rad = ring(centres, 500, 0, d50)
            pool = [p for i in range(len(centres)) for p in pts[i][far(pts[i], rad[i], refs)]]
            proposals.append(pick(pool))
        else:
            proposals.append(None)
        pts, rad = ring([g], 125, 0, d85)
        proposals.append(pick(pts[0][far(pts[0], rad[0], C[1:])]))
        weights = np.array([probs[t, j] if proposals[t] is not None else 0.0 for t in range(5)])
        if weights.sum() == 0:
            out[j] = 0
        else:
            chosen = rng.choice(5, p=weights / weights.sum())
            out[j] = [proposals[chosen][0], proposals[chosen][1], 1]
    return out


@pytest.mark.parametrize('num_near', [0, 1, 3])
def test_matches_straightforward_rederivation(num_near):
    """The pruned, lazily evaluated implementation equals a plain one draw for draw."""
    setup = np.random.default_rng(100 + num_near)
    joints = np.zeros((18, 3), np.float32)
    joints[:17, :2] = setup.uniform(60, 190, (17, 2))
    joints[:17, 2] = setup.random(17) > 0.15
    joints[17] = (1, 2, 1)
    near = np.zeros((max(num_near, 1), 18, 3), np.float32)
    for k in range(num_near):
        near[k, :, :2] = joints[:, :2] + setup.normal(0, 25, (18, 2))
        near[k, :, 2] = setup.random(18) > 0.2
    img2bb = np.array([[1.6, 0.1, -20], [-0.1, 1.6, -35]], np.float32)
    for seed in range(3):
        ours = synthesize_pose(joints, near, [40, 30, 90, 130], num_near, img2bb, np.random.default_rng(seed))
        ref = reference_synthesis(joints, near, [40, 30, 90, 130], num_near, img2bb, np.random.default_rng(seed))
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)


def plain_survivors(centres, angles, radii, cands, ref_mask, threshold):
    """Straightforward float64 test: point = centre + r (cos a, sin a), squared distance > t^2."""
    keep = np.ones(angles.shape, bool)
    for i, centre in enumerate(centres):
        px, py = centre[0] + radii[i] * np.cos(angles[i]), centre[1] + radii[i] * np.sin(angles[i])
        limit = radii[i] ** 2 if threshold is None else threshold ** 2
        for k in np.flatnonzero(ref_mask[i]):
            dx, dy = px - cands[k, 0], py - cands[k, 1]
            keep[i] &= dx * dx + dy * dy > limit
    return keep


def boundary_rings(rng, centres, refs, num, r_high, threshold):
    """Ring samples (angles, radii) whose points lie on a reference's exclusion circle
    (radius ``threshold``, or the sample's own radius) up to a relative 1e-12..1e-6 nudge."""
    angles, radii = np.empty((len(centres), num)), np.empty((len(centres), num))
    for i, (centre, ref) in enumerate(zip(centres, refs)):
        delta = ref - centre
        dist, direction = np.hypot(*delta), np.arctan2(delta[1], delta[0])
        nudge = rng.choice([-1, 1], num) * 10.0 ** rng.uniform(-12, -6, num)
        side = rng.choice([-1, 1], num)
        if threshold is None:
            # |c + r u - q| = r  <=>  cos(angle - direction) = D / (2 r)
            radii[i] = rng.uniform(dist / 2 + 0.1, r_high, num)
            angles[i] = direction + side * np.arccos(dist / (2 * radii[i])) * (1 + nudge)
        else:
            phi = rng.uniform(0, 2 * np.pi, num)
            point = ref + (threshold * (1 + nudge))[:, None] * np.stack([np.cos(phi), np.sin(phi)], 1)
            radii[i] = np.hypot(*(point - centre).T)
            angles[i] = np.arctan2(*(point - centre).T[::-1])
        angles[i] = np.mod(angles[i], 2 * np.pi)
    assert radii.max() < r_high
    return angles, radii


@pytest.mark.parametrize('threshold', [None, 3.0])
def test_screened_survivors_equal_the_plain_test_on_the_boundary(threshold):
    """Samples within 1e-12..1e-6 (relative) of a reference's exclusion circle: the float32
    screening must hand every close call to the exact float64 test."""
    from common.utils.posefix import _survivors
    rng = np.random.default_rng(0)
    cands = np.array([[100.0, 80.0], [103.5, 81.0], [97.0, 78.5], [180.0, 20.0]])
    centres, r_high = cands[:3], 7.0 if threshold is None else 11.0
    ref_mask = ~np.eye(3, 4, dtype=bool)
    angles, radii = boundary_rings(rng, centres, cands[[1, 2, 0]], 3000, r_high, threshold)
    dist = np.sqrt(((centres[:, None] - cands[None]) ** 2).sum(-1))
    expected = plain_survivors(centres, angles, radii, cands, ref_mask, threshold)
    kept = _survivors((centres, angles, radii), r_high, cands, dist, ref_mask, threshold)
    for i in range(3):
        np.testing.assert_array_equal(kept[i], np.flatnonzero(expected[i]))
    assert 0.2 < expected.mean() < 0.8
