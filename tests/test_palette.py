import cv2
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from engine.errors import FormatError
from engine.palette import PALETTE, colorize, present_ids, read_id_png, write_id_png


def _ids():
    ids = np.zeros((30, 40), np.uint8)
    ids[5:15, 5:20] = 1
    ids[18:28, 22:38] = 2
    ids[0, 0] = 255
    return ids


def test_palette_is_the_voc_colormap():
    assert PALETTE.shape == (256, 3) and PALETTE.dtype == np.uint8
    assert PALETTE[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert PALETTE[15].tolist() == [192, 128, 128] and PALETTE[255].tolist() == [224, 224, 192]
    assert len({tuple(c) for c in PALETTE}) == 256


def test_write_indexed_png_round_trip(tmp_path):
    path = tmp_path / "m.png"
    write_id_png(path, _ids())
    im = Image.open(path)
    assert im.mode == "P"
    assert np.frombuffer(bytes(im.getpalette()[:768]), np.uint8).reshape(256, 3).tolist() == PALETTE.tolist()
    assert np.array_equal(read_id_png(path), _ids())


def test_read_davis2016_binary_mask(tmp_path):
    path = tmp_path / "b.png"
    cv2.imwrite(str(path), (_ids() > 0).astype(np.uint8) * 255)
    assert np.array_equal(read_id_png(path), (_ids() > 0).astype(np.uint8))


def test_read_rgb_colored_with_palette(tmp_path):
    path = tmp_path / "rgb.png"
    Image.fromarray(colorize(_ids())).save(path)
    assert np.array_equal(read_id_png(path), _ids())


def test_rgb_with_foreign_colour_is_a_format_error(tmp_path):
    path = tmp_path / "bad.png"
    rgb = colorize(_ids())
    rgb[0, 1] = (1, 2, 3)
    Image.fromarray(rgb).save(path)
    with pytest.raises(FormatError, match="bad.png.*not in the VOC palette"):
        read_id_png(path)


def test_missing_and_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(FormatError, match="nope.png"):
        read_id_png(tmp_path / "nope.png")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png at all")
    with pytest.raises(FormatError, match="junk.png.*not a readable PNG"):
        read_id_png(junk)


def test_write_rejects_non_uint8(tmp_path):
    with pytest.raises(ValueError):
        write_id_png(tmp_path / "x.png", np.zeros((4, 4), np.int32))


@settings(max_examples=200, derandomize=True, deadline=None, database=None)
@given(hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=2, max_side=40),
                  elements=st.sampled_from([0, 1, 2, 7, 254, 255]) | st.integers(0, 255) | st.integers(3, 12)),
       st.integers(1, 3))
def test_present_ids_are_the_ids_with_a_pixel(ids, step):
    """present_ids names every id with at least one pixel and no other, on views too: few ids (each tested on its
    own) and ids far apart (a histogram)."""
    view = ids[::step, ::step]
    np.testing.assert_array_equal(present_ids(view), np.unique(view))
