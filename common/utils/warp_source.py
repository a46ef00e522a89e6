"""The source pixels an affine crop reads, so that only those are converted.

``cv2.warpAffine`` with bilinear interpolation and a constant border computes each output
pixel from the 2x2 source pixels around the point the inverse affine maps it to; pixels
outside the image count as the border value.  Nothing else of the source is read, and the
size of the source enters only through that inside/outside test.  So a crop is the same,
bit for bit, when the warp runs with the *same* matrix on a canvas of the *same* size whose
only pixels set are the ones it reads (``sampled_region``), holding exactly the values the
whole-image conversion would have given them (``fill_canvas``).  The rest of the canvas holds
whatever a previous crop left there (``uninitialised_canvas``): no pixel of it is ever read.

Why not cut the region out and shift the matrix instead: OpenCV inverts the matrix in double
precision and rounds the source coordinates to fixed point (or float32 in newer kernels);
a shifted translation is rounded differently, which moves a few samples by 1/32 pixel.
The canvas keeps the computation itself untouched.
"""
import math
import threading

import cv2
import numpy as np

# Pixels added on every side of the exact sampled box.  OpenCV's source coordinates differ
# from exact arithmetic by far less than a pixel (1/32-pixel fixed point, or float32 rounding
# of coordinates below 1e5), so two pixels are ample; tests check it against the full conversion.
SAFETY_MARGIN = 2


def sampled_region(img2bb, out_shape, img_height, img_width, margin=SAFETY_MARGIN):
    """Half-open box ``(row0, row1, col0, col1)`` of the source pixels a crop reads.

    img2bb: (2, 3) affine source pixels -> crop pixels (as given to ``cv2.warpAffine``);
    out_shape: (H_o, W_o) of the crop; img_height, img_width: source size, pixels.
    The crop's corner pixel centres map back (exact inverse, float64) to a parallelogram;
    its bounding box, widened to the bilinear neighbours and ``margin`` pixels, clipped to
    the image, is returned.  An empty box has ``row1 <= row0`` or ``col1 <= col0`` (the crop
    lies outside the image); a singular or non-finite affine gives the whole image.
    """
    whole = (0, int(img_height), 0, int(img_width))
    forward = np.vstack([np.asarray(img2bb, dtype=np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])
    if not np.all(np.isfinite(forward)) or abs(np.linalg.det(forward)) < 1e-12:
        return whole
    inverse = np.linalg.inv(forward)[:2]
    out_h, out_w = int(out_shape[0]), int(out_shape[1])
    corners = np.array([[0, 0, 1], [out_w - 1, 0, 1], [0, out_h - 1, 1], [out_w - 1, out_h - 1, 1]],
                       dtype=np.float64)
    source = corners @ inverse.T
    if not np.all(np.isfinite(source)):
        return whole
    (x_min, y_min), (x_max, y_max) = source.min(0), source.max(0)
    # A sample at x reads columns floor(x) and floor(x) + 1.
    col0 = max(0, math.floor(x_min) - margin)
    col1 = min(int(img_width), math.floor(x_max) + 2 + margin)
    row0 = max(0, math.floor(y_min) - margin)
    row1 = min(int(img_height), math.floor(y_max) + 2 + margin)
    return row0, row1, col0, col1


_THREAD_BUFFER = threading.local()


def uninitialised_canvas(shape, dtype):
    """Array of ``shape`` and ``dtype`` with unspecified contents (only sampled pixels get written).

    One buffer per thread, grown to the largest canvas asked for and reused: valid until the
    next call in the same thread.  A fresh allocation of a canvas this size (50 MB for a
    2048x2048 float image) is mapped page by page as the region is written, which costs more
    than converting the region; a reused buffer is already mapped.
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buffer = getattr(_THREAD_BUFFER, 'buffer', None)
    if buffer is None or buffer.nbytes < nbytes:
        buffer = np.empty(nbytes, dtype=np.uint8)
        _THREAD_BUFFER.buffer = buffer
    return buffer[:nbytes].view(dtype).reshape(shape)


def release_canvas():
    """Drop this thread's canvas buffer, so that its memory goes back to the system.

    For a caller that has finished a run of crops and is about to need memory elsewhere (the
    demo before drawing: a 24-megapixel picture's float32 canvas is 275 MiB); the next crop
    allocates a new buffer.
    """
    _THREAD_BUFFER.buffer = None


def fill_canvas(pixels, region, do_flip, bgr):
    """The warp source for a crop, mirrored when ``do_flip``.

    pixels: (H, W[, C]) source image; bgr: it is OpenCV's decode, (H, W, 3) uint8 in BGR
    order, and the canvas becomes float32 RGB 0..255 (as ``load_img``); otherwise the canvas
    keeps the pixels' channels and dtype.  region: ``sampled_region`` box in the coordinates
    of the (mirrored) image the warp reads.  Only ``region`` is written, with the values the
    whole-image conversion would hold there: mirrored column ``u`` is source column
    ``W - 1 - u``, and the uint8 -> float32 cast is exact.  An unmirrored source that needs
    no conversion is returned as it is (contiguous, no copy when it already is).
    """
    width = pixels.shape[1]
    if not do_flip and not bgr:
        return np.ascontiguousarray(pixels)
    row0, row1, col0, col1 = region
    canvas = uninitialised_canvas(pixels.shape, np.float32 if bgr else pixels.dtype)
    if row1 <= row0 or col1 <= col0:
        return canvas
    # OpenCV's channel swap and mirror on the block, then one casting copy: NumPy's reversed views
    # would be an order of magnitude slower.
    block = pixels[row0:row1, width - col1:width - col0] if do_flip else pixels[row0:row1, col0:col1]
    if bgr:
        block = cv2.cvtColor(block, cv2.COLOR_BGR2RGB)
    if do_flip:
        block = cv2.flip(block, 1)
    target = canvas[row0:row1, col0:col1]
    target[...] = block.reshape(target.shape)   # a single channel comes back from OpenCV without its axis
    return canvas
