"""Independent re-derivations of documented behaviour (docs/METHOD.md) shared by several test modules."""
import numpy as np


def ref_square_box(box, width, height):
    """Box processing for a usable box: clip to the image, square (aspect 1) and enlarge 1.25x."""
    x, y, w, h = box
    x1, y1 = max(0, x), max(0, y)
    x2, y2 = min(width - 1, x1 + max(0, w - 1)), min(height - 1, y1 + max(0, h - 1))
    w, h = x2 - x1, y2 - y1
    cx, cy = x1 + w / 2, y1 + h / 2
    side = max(w, h) * 1.25
    return np.array([cx - side / 2, cy - side / 2, side, side])
