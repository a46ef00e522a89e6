"""JPEG truncation check of ``load_img`` (docs/METHOD.md, "Image loading") on real encoder output.

Every variant is encoded by OpenCV from a noisy picture (so the scans contain 0xFF00
stuffing); a complete file must load exactly as OpenCV decodes it, whatever follows its
end-of-image marker; a file cut anywhere before that marker must be refused naming the path.
"""
import cv2
import numpy as np
import pytest

from common.utils.preprocessing import load_img

EOI = b'\xff\xd9'


def noisy_picture(shape=(48, 64, 3), seed=0):
    """uint8 image with structure and noise (plenty of 0xFF bytes in the entropy-coded data)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    base = (xx * 4 + yy * 3) % 256
    picture = base[..., None] if len(shape) == 3 else base
    picture = picture + rng.integers(0, 80, size=shape)
    return np.clip(picture, 0, 255).astype(np.uint8)


def encode(picture, *params):
    ok, buf = cv2.imencode('.jpg', picture, list(params))
    assert ok
    return buf.tobytes()


def app1_with_thumbnail(thumbnail):
    """An EXIF-like APP1 segment whose payload embeds a complete JPEG (with its own EOI)."""
    payload = b'Exif\x00\x00' + b'II*\x00\x08\x00\x00\x00' + thumbnail
    return b'\xff\xe1' + (len(payload) + 2).to_bytes(2, 'big') + payload


def with_thumbnail(main, thumbnail):
    """``main`` with the APP1 thumbnail segment inserted right after its SOI."""
    return main[:2] + app1_with_thumbnail(thumbnail) + main[2:]


def variants():
    """name -> complete JPEG bytes."""
    colour = noisy_picture()
    plain = encode(colour, cv2.IMWRITE_JPEG_QUALITY, 95)
    thumbnail = encode(noisy_picture((8, 8, 3), seed=1))
    trailer = bytes(np.random.default_rng(2).integers(0, 256, 4000, dtype=np.uint8)).replace(EOI, b'\x00\x00')
    return {
        'plain': plain,
        'trailing_data': plain + trailer,
        'trailing_jpeg_like_data': plain + b'\xff\xd8\xff\xe0' + trailer,
        'exif_thumbnail': with_thumbnail(plain, thumbnail),
        'progressive': encode(colour, cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
        'restart_markers': encode(colour, cv2.IMWRITE_JPEG_RST_INTERVAL, 1),
        'grayscale': encode(noisy_picture((48, 64))),
        'progressive_grayscale_with_trailer': encode(noisy_picture((48, 64)), cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
        + trailer,
    }


def main_eoi_offset(data):
    """Offset of the main image's EOI in a complete OpenCV-written file (the trailer stripped)."""
    return data.rindex(EOI)


@pytest.mark.parametrize('name', sorted(variants()))
def test_complete_jpeg_is_accepted_and_decoded_as_opencv_does(tmp_path, name):
    path = tmp_path / f'{name}.jpg'
    path.write_bytes(variants()[name])
    reference = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    img = load_img(path, order='BGR')
    assert img.dtype == np.float32 and img.shape == (48, 64, 3)
    np.testing.assert_array_equal(img, reference.astype(np.float32))


def test_trailer_is_longer_than_the_old_tail_window():
    """The trailing-data variants would have been refused by a look at the last 1 KiB."""
    for name in ('trailing_data', 'progressive_grayscale_with_trailer'):
        data = variants()[name]
        assert EOI not in data[-1024:]


def cut_points(data):
    """name -> length of a prefix of ``data`` that lacks the main image's EOI."""
    sos = data.index(b'\xff\xda')
    eoi = data.rindex(EOI)
    return {'inside_header': sos // 2, 'inside_scan_header': sos + 3,
            'inside_scan': (sos + eoi) // 2, 'just_before_eoi': eoi, 'half_eoi': eoi + 1}


@pytest.mark.parametrize('name', ['plain', 'progressive', 'grayscale', 'restart_markers'])
@pytest.mark.parametrize('cut', ['inside_header', 'inside_scan_header', 'inside_scan', 'just_before_eoi',
                                 'half_eoi'])
def test_truncated_jpeg_is_refused(tmp_path, name, cut):
    data = variants()[name]
    path = tmp_path / f'{name}_{cut}.jpg'
    path.write_bytes(data[:cut_points(data)[cut]])
    with pytest.raises(IOError, match=str(path)):
        load_img(path)


@pytest.mark.parametrize('cut', ['inside_scan', 'just_before_eoi'])
def test_thumbnail_eoi_does_not_count_as_the_main_image_end(tmp_path, cut):
    """The main image cut before its EOI stays refused although the embedded thumbnail has one."""
    data = variants()['plain']
    thumbnail = encode(noisy_picture((8, 8, 3), seed=1))
    cut_data = with_thumbnail(data[:cut_points(data)[cut]], thumbnail)
    assert EOI in cut_data
    path = tmp_path / f'thumb_{cut}.jpg'
    path.write_bytes(cut_data)
    with pytest.raises(IOError, match='Truncated JPEG'):
        load_img(path)


def test_progressive_cut_between_scans_is_refused(tmp_path):
    """A progressive file cut right after one complete scan (before the next SOS) is refused."""
    data = variants()['progressive']
    scans = [i for i in range(len(data) - 1) if data[i:i + 2] == b'\xff\xda']
    assert len(scans) > 2
    path = tmp_path / 'between_scans.jpg'
    path.write_bytes(data[:scans[2]])
    with pytest.raises(IOError, match='Truncated JPEG'):
        load_img(path)


def test_non_jpeg_file_is_not_judged_by_the_jpeg_check(tmp_path):
    picture = noisy_picture()
    path = tmp_path / 'image.png'
    cv2.imwrite(str(path), picture)
    np.testing.assert_array_equal(load_img(path, order='BGR'), picture.astype(np.float32))


def first_marker_by_byte_walk(data, pos):
    """Reference: step over each 0xFF of a scan; stuffing (FF 00) and restarts (FF D0..D7) stay in
    the scan, fill bytes (FF FF) move on by one, anything else is the next marker."""
    while True:
        pos = data.find(b'\xff', pos)
        if pos < 0 or pos + 1 >= len(data):
            return None
        follower = data[pos + 1]
        if follower == 0x00 or 0xD0 <= follower <= 0xD7:
            pos += 2
        elif follower == 0xFF:
            pos += 1
        else:
            return pos


def test_scan_end_search_agrees_with_a_byte_walk():
    from common.utils.preprocessing import _skip_entropy_coded_data
    rng = np.random.default_rng(0)
    alphabet = np.array([0xFF, 0x00, 0xD0, 0xD7, 0xD8, 0xD9, 0xDA, 0x12, 0xFE], np.uint8)
    for _ in range(2000):
        data = bytes(rng.choice(alphabet, size=int(rng.integers(0, 24))).tolist())
        start = int(rng.integers(0, len(data) + 1))
        assert _skip_entropy_coded_data(data, start) == first_marker_by_byte_walk(data, start), (data, start)
