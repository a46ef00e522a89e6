"""Headless z-buffer renderer on analytic scenes."""
import cv2
import numpy as np
import pytest

from common.utils.render import AMBIENT, DIFFUSE, rasterize, render_mask, render_meshes

FOCAL = (100.0, 100.0)
PRINCPT = (5.0, 4.0)


def unproject(pixels, depth, focal=FOCAL, princpt=PRINCPT):
    """Camera-space points (N, 3) at depth Z that project onto pixels (N, 2)."""
    pixels = np.asarray(pixels, np.float64)
    depth = np.broadcast_to(np.asarray(depth, np.float64), (len(pixels),))
    x = (pixels[:, 0] - princpt[0]) / focal[0] * depth
    y = (pixels[:, 1] - princpt[1]) / focal[1] * depth
    return np.stack([x, y, depth], axis=1)


def test_single_triangle_covers_expected_pixels():
    tri_px = np.array([[1.5, 1.3], [10.7, 2.2], [2.6, 9.9]])
    height, width = 12, 14
    verts = unproject(tri_px, 2.0)
    # Independent coverage: OpenCV's point-in-polygon test at every pixel centre.
    contour = tri_px.astype(np.float32).reshape(-1, 1, 2)
    expected = np.zeros((height, width), bool)
    for y in range(height):
        for x in range(width):
            dist = cv2.pointPolygonTest(contour, (float(x), float(y)), True)
            assert abs(dist) > 1e-3          # no pixel centre on an edge: unambiguous
            expected[y, x] = dist > 0
    image = np.full((height, width, 3), 7, np.uint8)
    out, depth, mesh = render_meshes(image, [verts], [[0, 1, 2]], FOCAL, PRINCPT, colors=[(1, 1, 1)],
                                     return_depth=True)
    assert out.dtype == np.uint8 and out.shape == image.shape
    np.testing.assert_array_equal(mesh >= 0, expected)
    np.testing.assert_array_equal(render_mask(verts, [[0, 1, 2]], FOCAL, PRINCPT, (height, width)), expected)
    assert np.all(out[~expected] == 7)
    assert np.all(out[expected] > 7)
    np.testing.assert_allclose(depth[expected], 2.0, rtol=1e-6)
    assert np.all(np.isinf(depth[~expected]))
    # Winding does not matter (two-sided).
    mesh_rev = rasterize([verts], [[0, 2, 1]], FOCAL, PRINCPT, (height, width))[1]
    np.testing.assert_array_equal(mesh_rev >= 0, expected)


def test_flat_triangle_colour_matches_lambert():
    # A fronto-parallel triangle: intensity uses the angle to the ray from its centre to
    # the camera, so compute that by hand.
    tri_px = np.array([[0.0, 0.0], [30.0, 0.0], [0.0, 30.0]])
    verts = unproject(tri_px, 4.0)
    centre = verts.mean(axis=0)
    cos = abs(centre[2]) / np.linalg.norm(centre)
    color = np.array([0.2, 0.6, 1.0])
    out = render_meshes(np.zeros((20, 20, 3), np.uint8), [verts], [[0, 1, 2]], FOCAL, PRINCPT, colors=[color])
    np.testing.assert_allclose(out[3, 3], np.rint(255 * color * (AMBIENT + DIFFUSE * cos)), atol=0.51)


@pytest.mark.parametrize('swap_order', [False, True])
def test_nearer_triangle_wins(swap_order):
    big = np.array([[-20.0, -20.0], [60.0, -20.0], [-20.0, 60.0]])
    near = unproject(big, 2.0)
    far = unproject(big + 3.0, 3.0)
    meshes = [far, near] if swap_order else [near, far]
    colors = [(0, 0, 1), (1, 0, 0)] if swap_order else [(1, 0, 0), (0, 0, 1)]
    out, depth, mesh = render_meshes(np.zeros((10, 10, 3), np.uint8), meshes, [[0, 1, 2]], FOCAL, PRINCPT,
                                     colors=colors, return_depth=True)
    assert np.all(out[..., 0] > 0) and np.all(out[..., 2] == 0)       # red (near) everywhere
    np.testing.assert_allclose(depth, 2.0, rtol=1e-6)
    assert np.all(mesh == (1 if swap_order else 0))


def test_depth_is_perspective_correct_on_a_slanted_triangle():
    verts = np.array([[-1.0, -1.0, 2.0], [1.5, -1.0, 5.0], [-1.0, 1.5, 3.0]])
    height, width = 12, 12
    depth = rasterize([verts], [[0, 1, 2]], FOCAL, PRINCPT, (height, width))[0]
    normal = np.cross(verts[1] - verts[0], verts[2] - verts[0])
    offset = normal @ verts[0]
    ys, xs = np.nonzero(np.isfinite(depth))
    assert len(xs) > 20
    rays = np.stack([(xs - PRINCPT[0]) / FOCAL[0], (ys - PRINCPT[1]) / FOCAL[1], np.ones(len(xs))], axis=1)
    expected = offset / (rays @ normal)          # Z of the ray-plane intersection
    np.testing.assert_allclose(depth[ys, xs], expected, rtol=1e-9)


def test_intersecting_triangles_split_by_depth():
    # Two triangles crossing each other: the nearer one wins pixel by pixel.
    a = np.array([[-1.0, -1.0, 2.0], [1.0, -1.0, 4.0], [0.0, 1.0, 3.0]])
    b = np.array([[-1.0, -1.0, 4.0], [1.0, -1.0, 2.0], [0.0, 1.0, 3.0]])
    depth, mesh, _ = rasterize([a, b], [[0, 1, 2]], FOCAL, PRINCPT, (10, 10))
    covered = mesh >= 0
    depth_a = rasterize([a], [[0, 1, 2]], FOCAL, PRINCPT, (10, 10))[0]
    depth_b = rasterize([b], [[0, 1, 2]], FOCAL, PRINCPT, (10, 10))[0]
    np.testing.assert_allclose(depth[covered], np.minimum(depth_a, depth_b)[covered])
    assert set(np.unique(mesh[covered])) == {0, 1}


def test_face_towards_camera_is_brighter():
    # Left: fronto-parallel square; right: a square tilted ~70 deg about the vertical axis.
    faces = [[0, 1, 2], [0, 2, 3]]
    facing = np.array([[-0.6, -0.2, 3.0], [-0.2, -0.2, 3.0], [-0.2, 0.2, 3.0], [-0.6, 0.2, 3.0]])
    angle = np.deg2rad(70)
    half = 0.2
    cx = 0.4
    tilted = np.array([[cx - half * np.cos(angle), -0.2, 3.0 - half * np.sin(angle)],
                       [cx + half * np.cos(angle), -0.2, 3.0 + half * np.sin(angle)],
                       [cx + half * np.cos(angle), 0.2, 3.0 + half * np.sin(angle)],
                       [cx - half * np.cos(angle), 0.2, 3.0 - half * np.sin(angle)]])
    focal, princpt = (300.0, 300.0), (100.0, 60.0)
    out, _, mesh = render_meshes(np.zeros((120, 200, 3), np.uint8), [facing, tilted], faces, focal, princpt,
                                 colors=[(1, 1, 1), (1, 1, 1)], return_depth=True)
    bright_facing = out[mesh == 0, 0].mean()
    bright_tilted = out[mesh == 1, 0].mean()
    assert (mesh == 0).sum() > 100 and (mesh == 1).sum() > 20
    assert bright_facing > bright_tilted + 60


def test_alpha_blend_empty_input_and_shared_faces():
    image = np.full((6, 6, 3), 100, np.uint8)
    assert np.array_equal(render_meshes(image, [], [[0, 1, 2]], FOCAL, PRINCPT), image)
    big = unproject(np.array([[-20.0, -20.0], [60.0, -20.0], [-20.0, 60.0]]), 2.0)
    out = render_meshes(image, [big], [[0, 1, 2]], FOCAL, PRINCPT, colors=[(0, 0, 0)], alpha=0.5)
    assert np.all(out == 50)
    # Behind the camera: dropped, image unchanged.
    assert np.array_equal(render_meshes(image, [big * [1, 1, -1]], [[0, 1, 2]], FOCAL, PRINCPT), image)


def test_tessellated_plane_has_no_holes_across_chunks(monkeypatch):
    """A 15x15-pixel square split into 450 triangles whose diagonals pass through pixel
    centres: exactly the pixels inside are covered, however the triangles are chunked."""
    import common.utils.render as render
    n = 15
    grid = np.stack(np.meshgrid(np.arange(n + 1) + 2.5, np.arange(n + 1) + 2.5), axis=-1).reshape(-1, 2)
    verts = unproject(grid, 2.5)
    faces = []
    for row in range(n):
        for col in range(n):
            a, b = row * (n + 1) + col, row * (n + 1) + col + 1
            c, d = a + n + 1, b + n + 1
            faces += [[a, b, d], [a, d, c]]
    expected = np.zeros((22, 22), bool)
    expected[3:18, 3:18] = True
    for chunk in (1 << 20, 37):
        monkeypatch.setattr(render, 'CHUNK_ELEMENTS', chunk)
        np.testing.assert_array_equal(render_mask(verts, faces, FOCAL, PRINCPT, (22, 22)), expected)


def _coverage_by_point_test(tri_px, height, width):
    """Pixels whose centre lies strictly inside the triangle (OpenCV), image-clipped."""
    contour = np.asarray(tri_px, np.float32).reshape(-1, 1, 2)
    return np.array([[cv2.pointPolygonTest(contour, (float(x), float(y)), False) > 0
                      for x in range(width)] for y in range(height)])


def test_triangle_crossing_the_image_border_does_not_wrap():
    # A small triangle leaving the image on the right shares a chunk with a larger one:
    # the chunk's padded grid must not paint its outside part onto the next row's start.
    height, width = 10, 10
    small = np.array([[5.6, 1.2], [14.0, 1.2], [5.6, 3.6]])
    large = np.array([[0.3, 4.4], [8.6, 4.4], [0.3, 9.6]])
    verts = unproject(np.concatenate([small, large]), 2.0)
    mesh = rasterize([verts], [[0, 1, 2], [3, 4, 5]], FOCAL, PRINCPT, (height, width))[1]
    expected = _coverage_by_point_test(small, height, width) | _coverage_by_point_test(large, height, width)
    np.testing.assert_array_equal(mesh >= 0, expected)
    assert not (mesh[1:4, :2] >= 0).any()
