"""Headless z-buffered triangle rasteriser in NumPy (no OpenGL).

Camera: pinhole with camera-space coordinates x right, y down, z forward (metres),
``u = fx * X / Z + cx``, ``v = fy * Y / Z + cy`` as ``cam2pixel``.  Pixel ``(x, y)`` has
its centre at the integer coordinates ``(x, y)``; a pixel is covered by a triangle when
its centre lies inside or on an edge of the projected triangle.  Depth is interpolated
perspective-correctly (1/Z linear in the image) and the nearest fragment wins across
all meshes (one shared z-buffer).  Triangles with a vertex at ``Z <= NEAR_PLANE`` are
dropped (no clipping).  Shading is flat Lambert with the light at the camera,
two-sided: ``intensity = AMBIENT + DIFFUSE * |cos|`` of the angle between the face
normal and the ray from the face centre to the camera.

Vectorised over triangles: triangles are sorted by the size of their pixel bounding
box and processed in chunks, each as a (T, h, w) grid of pixel centres.
"""
import numpy as np

NEAR_PLANE = 1e-6        # metres; triangles with a vertex this close or behind are dropped
AMBIENT, DIFFUSE = 0.3, 0.7
CHUNK_ELEMENTS = 1 << 20  # pixel tests per chunk (bounds temporary memory to a few tens of MB)
DEFAULT_COLORS = ((0.65, 0.74, 0.86), (0.93, 0.73, 0.53), (0.65, 0.86, 0.70),
                  (0.89, 0.65, 0.80), (0.90, 0.88, 0.60), (0.70, 0.66, 0.90))


def project(vertices, focal, princpt):
    """(V, 3) camera-space points -> (V, 2) pixel coordinates (cam2pixel convention)."""
    vertices = np.asarray(vertices, dtype=np.float64)
    z = vertices[:, 2]
    with np.errstate(divide='ignore', invalid='ignore'):
        u = vertices[:, 0] / z * focal[0] + princpt[0]
        v = vertices[:, 1] / z * focal[1] + princpt[1]
    return np.stack([u, v], axis=1)


def _triangles(vertices, faces, focal, princpt):
    """Stack the meshes' triangles: (uv (T, 3, 2), z (T, 3), xyz (T, 3, 3), mesh index (T,))."""
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    uv, z, xyz, mesh_idx = [], [], [], []
    for index, verts in enumerate(vertices):
        verts = np.asarray(verts, dtype=np.float64).reshape(-1, 3)
        tri = verts[faces]
        uv.append(project(verts, focal, princpt)[faces])
        z.append(tri[:, :, 2])
        xyz.append(tri)
        mesh_idx.append(np.full(len(faces), index, dtype=np.int32))
    if not uv:
        return np.zeros((0, 3, 2)), np.zeros((0, 3)), np.zeros((0, 3, 3)), np.zeros(0, np.int32)
    return np.concatenate(uv), np.concatenate(z), np.concatenate(xyz), np.concatenate(mesh_idx)


def _pixel_boxes(uv, width, height):
    """Integer pixel bounding boxes (x0, x1, y0, y1) inclusive of pixel centres, clipped."""
    x0 = np.maximum(np.ceil(uv[:, :, 0].min(axis=1)), 0)
    x1 = np.minimum(np.floor(uv[:, :, 0].max(axis=1)), width - 1)
    y0 = np.maximum(np.ceil(uv[:, :, 1].min(axis=1)), 0)
    y1 = np.minimum(np.floor(uv[:, :, 1].max(axis=1)), height - 1)
    return x0.astype(np.int64), x1.astype(np.int64), y0.astype(np.int64), y1.astype(np.int64)


def _chunk_fragments(uv, inv_z, x0, y0, own_w, own_h, box_w, box_h, width):
    """Fragments of a chunk of triangles: (pixel index, depth, triangle index in chunk).

    uv (T, 3, 2); inv_z (T, 3) = 1/Z; x0, y0 (T,) top-left pixel; own_w, own_h (T,) each
    triangle's image-clipped box size; the grid is (box_h, box_w) pixels per triangle,
    the chunk's largest box, so cells past a triangle's own box are masked out (they
    would otherwise wrap into the next image row).
    """
    px = (x0[:, None, None] + np.arange(box_w)[None, None, :]).astype(np.float64)
    py = (y0[:, None, None] + np.arange(box_h)[None, :, None]).astype(np.float64)
    ax, ay = uv[:, 0, 0, None, None], uv[:, 0, 1, None, None]
    bx, by = uv[:, 1, 0, None, None], uv[:, 1, 1, None, None]
    cx, cy = uv[:, 2, 0, None, None], uv[:, 2, 1, None, None]
    area = (bx - ax) * (cy - ay) - (cx - ax) * (by - ay)
    # Edge functions, each the signed area opposite one vertex; normalised they are the
    # barycentric weights (independent of the triangle's winding).
    w0 = ((bx - px) * (cy - py) - (cx - px) * (by - py)) / area
    w1 = ((cx - px) * (ay - py) - (ax - px) * (cy - py)) / area
    w2 = ((ax - px) * (by - py) - (bx - px) * (ay - py)) / area
    eps = -1e-9
    inside = (w0 >= eps) & (w1 >= eps) & (w2 >= eps)
    inside &= (np.arange(box_w)[None, None, :] < own_w[:, None, None])
    inside &= (np.arange(box_h)[None, :, None] < own_h[:, None, None])
    tri, row, col = np.nonzero(inside)
    w0, w1, w2 = w0[tri, row, col], w1[tri, row, col], w2[tri, row, col]
    depth = 1.0 / (w0 * inv_z[tri, 0] + w1 * inv_z[tri, 1] + w2 * inv_z[tri, 2])
    pixel = (y0[tri] + row) * width + (x0[tri] + col)
    return pixel, depth, tri


def rasterize(vertices, faces, focal, princpt, img_shape):
    """Z-buffer rasterisation of several meshes sharing one face list.

    vertices: list of (V, 3) camera-space arrays (metres); faces (F, 3) int;
    focal (fx, fy), princpt (cx, cy) pixels; img_shape (H, W).
    Returns ``(depth (H, W) float64, np.inf where empty; mesh_index (H, W) int32, -1
    where empty; face_index (H, W) int64 into ``faces``, -1 where empty)``.
    """
    height, width = int(img_shape[0]), int(img_shape[1])
    uv, z, _, mesh_idx = _triangles(vertices, faces, focal, princpt)
    num_faces = np.asarray(faces).reshape(-1, 3).shape[0]
    tri_ids = np.arange(len(uv))
    with np.errstate(invalid='ignore'):
        area = ((uv[:, 1, 0] - uv[:, 0, 0]) * (uv[:, 2, 1] - uv[:, 0, 1])
                - (uv[:, 2, 0] - uv[:, 0, 0]) * (uv[:, 1, 1] - uv[:, 0, 1]))
        usable = np.all(z > NEAR_PLANE, axis=1) & np.isfinite(uv).all(axis=(1, 2)) & (np.abs(area) > 1e-12)
    x0, x1, y0, y1 = _pixel_boxes(np.where(usable[:, None, None], uv, 0.0), width, height)
    usable &= (x1 >= x0) & (y1 >= y0)
    tri_ids = tri_ids[usable]
    box_w, box_h = (x1 - x0 + 1)[usable], (y1 - y0 + 1)[usable]
    order = np.lexsort((box_w, box_h))
    tri_ids, box_w, box_h = tri_ids[order], box_w[order], box_h[order]

    zbuf = np.full(height * width, np.inf)
    fragments = []
    start = 0
    while start < len(tri_ids):
        # Grow the chunk while the padded (T, max h, max w) grid stays within budget;
        # sorting by box size keeps the padding small.
        cells = box_h[start] * box_w[start]
        count = max(1, int(CHUNK_ELEMENTS // max(cells, 1)))
        stop = min(len(tri_ids), start + count)
        while stop - start > 1 and (stop - start) * box_h[start:stop].max() * box_w[start:stop].max() > CHUNK_ELEMENTS:
            stop = start + max(1, (stop - start) // 2)
        ids = tri_ids[start:stop]
        pixel, depth, tri = _chunk_fragments(uv[ids], 1.0 / z[ids], x0[ids], y0[ids],
                                             box_w[start:stop], box_h[start:stop],
                                             int(box_w[start:stop].max()), int(box_h[start:stop].max()), width)
        np.minimum.at(zbuf, pixel, depth)
        fragments.append((pixel, depth, ids[tri]))
        start = stop

    mesh_map = np.full(height * width, -1, dtype=np.int32)
    face_map = np.full(height * width, -1, dtype=np.int64)
    for pixel, depth, tri in fragments:
        win = depth <= zbuf[pixel]
        mesh_map[pixel[win]] = mesh_idx[tri[win]]
        face_map[pixel[win]] = tri[win] % max(num_faces, 1)
    shape = (height, width)
    return zbuf.reshape(shape), mesh_map.reshape(shape), face_map.reshape(shape)


def face_shading(vertices, faces):
    """Flat two-sided Lambert intensity per face (F,) in [AMBIENT, AMBIENT + DIFFUSE].

    The light sits at the camera: the cosine is between the face normal and the ray
    from the face centre to the camera origin.
    """
    tri = np.asarray(vertices, dtype=np.float64)[np.asarray(faces, dtype=np.int64)]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    to_camera = -tri.mean(axis=1)
    with np.errstate(invalid='ignore', divide='ignore'):
        cos = np.abs((normal * to_camera).sum(axis=1)) / (
            np.linalg.norm(normal, axis=1) * np.linalg.norm(to_camera, axis=1))
    return AMBIENT + DIFFUSE * np.nan_to_num(cos)


def _mesh_colors(colors, count):
    """(count, 3) RGB in [0, 1]; values above 1 are read as 0..255."""
    if colors is None:
        return np.array([DEFAULT_COLORS[i % len(DEFAULT_COLORS)] for i in range(count)], dtype=np.float64)
    colors = np.asarray(colors, dtype=np.float64).reshape(-1, 3)
    if colors.max(initial=0) > 1.0:
        colors = colors / 255.0
    if len(colors) == 1:
        colors = np.repeat(colors, count, axis=0)
    if len(colors) < count:
        raise ValueError(f"render_meshes: {len(colors)} colours for {count} meshes")
    return colors[:count]


def render_meshes(image, vertices, faces, focal, princpt, colors=None, alpha=1.0, return_depth=False):
    """Draw meshes over an image; returns a new (H, W, 3) uint8 image.

    image (H, W, 3) uint8 RGB (any numeric type, 0..255); vertices: list of (V, 3)
    camera-space metres (x right, y down, z forward), or one (V, 3) array; faces (F, 3)
    int shared by all meshes; focal (fx, fy), princpt (cx, cy) pixels (pixel (x, y)
    centre at integer coordinates, as cam2pixel); colors: per-mesh RGB in [0, 1]
    (or 0..255), default a pastel palette; alpha blends the meshes over the image.
    return_depth=True returns ``(image, depth (H, W) float32 metres with np.inf where
    empty, mesh_index (H, W) int32 with -1 where empty)``.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"render_meshes: image must be (H, W, 3), got {image.shape}")
    if isinstance(vertices, np.ndarray) and vertices.ndim == 2:
        vertices = [vertices]
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    height, width = image.shape[:2]
    depth, mesh_map, face_map = rasterize(vertices, faces, focal, princpt, (height, width))
    out = image.astype(np.float64)
    covered = mesh_map >= 0
    if covered.any():
        colors = _mesh_colors(colors, len(vertices))
        shading = np.stack([face_shading(verts, faces) for verts in vertices])   # (M, F)
        mesh_ids, face_ids = mesh_map[covered], face_map[covered]
        rgb = 255.0 * colors[mesh_ids] * shading[mesh_ids, face_ids][:, None]
        out[covered] = (1.0 - alpha) * out[covered] + alpha * rgb
    rendered = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if return_depth:
        return rendered, depth.astype(np.float32), mesh_map
    return rendered


def render_mask(vertices, faces, focal, princpt, img_shape):
    """(H, W) bool: pixels covered by any of the meshes (same conventions as render_meshes)."""
    if isinstance(vertices, np.ndarray) and vertices.ndim == 2:
        vertices = [vertices]
    return rasterize(vertices, faces, focal, princpt, img_shape)[1] >= 0
