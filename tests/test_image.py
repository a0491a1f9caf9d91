"""Tests for minidarknet.image: loading, Darknet's resize / letterbox / crop, saving."""
import os

import numpy as np
import pytest
from PIL import Image

from minidarknet.errors import ImageError
from minidarknet.image import (
    crop_image, from_chw, letterbox_geometry, letterbox_image, load_image, prepare_image,
    resize_image, resize_min, resize_min_crop, save_image, to_chw,
)

F = np.float32


# --------------------------------------------------------------------------- reference resize

def reference_resize(im, w, h):
    """Straightforward per-pixel float32 version of Darknet's resize_image (slow, tiny images)."""
    c, ih, iw = im.shape
    part = np.zeros((c, ih, w), F)
    w_scale = F(iw - 1) / F(w - 1) if w > 1 else None
    h_scale = F(ih - 1) / F(h - 1) if h > 1 else None
    for k in range(c):
        for r in range(ih):
            for col in range(w):
                if col == w - 1 or iw == 1:
                    val = im[k, r, iw - 1]
                else:
                    sx = F(col) * w_scale
                    ix = int(sx)
                    dx = F(sx - F(ix))
                    val = F(F(F(1) - dx) * im[k, r, ix]) + F(dx * im[k, r, ix + 1])
                part[k, r, col] = val
    out = np.zeros((c, h, w), F)
    for k in range(c):
        for r in range(h):
            sy = F(r) * h_scale
            iy = int(sy)
            dy = F(sy - F(iy))
            for col in range(w):
                out[k, r, col] = F(F(1) - dy) * part[k, iy, col]
            if r == h - 1 or ih == 1:
                continue
            for col in range(w):
                out[k, r, col] = F(out[k, r, col] + F(dy * part[k, iy + 1, col]))
    return out


@pytest.mark.parametrize("src,dst", [
    ((7, 5), (11, 13)), ((7, 5), (3, 2)), ((7, 5), (2, 9)), ((6, 6), (4, 4)),
    ((1, 4), (5, 3)), ((4, 1), (3, 5)), ((9, 8), (4, 1)), ((5, 3), (17, 2)),
])
def test_resize_matches_reference(src, dst):
    rng = np.random.RandomState(sum(src) * 31 + sum(dst))
    ih, iw = src
    h, w = dst
    im = rng.rand(3, ih, iw).astype(F)
    got = resize_image(im, w, h)
    assert got.dtype == F and got.shape == (3, h, w)
    np.testing.assert_array_equal(got, reference_resize(im, w, h))


def test_resize_same_size_is_copy():
    im = np.random.RandomState(0).rand(3, 4, 5).astype(F)
    out = resize_image(im, 5, 4)
    np.testing.assert_array_equal(out, im)
    assert out is not im


def test_resize_one_row_output_takes_first_row():
    # Darknet divides by zero here (undefined); we document "first row".
    im = np.arange(2 * 3 * 4, dtype=F).reshape(2, 3, 4) / 24
    out = resize_image(im, 4, 1)
    np.testing.assert_array_equal(out[:, 0], im[:, 0])


@pytest.mark.parametrize("in_h,out_h,ulp", [(400, 608, 2.0 ** -15), (960, 608, 2.0 ** -14),
                                            (1024, 256, 2.0 ** -14)])
def test_resize_near_black_last_row(in_h, out_h, ulp):
    im = np.ones((3, in_h, 4), F)
    out = resize_image(im, 4, out_h)
    # (out_h-1)*scale rounds to one float32 ulp below in_h-1: dy = 1-ulp, row = (1-dy)*1
    assert out[0, -1, 0] == F(ulp)
    assert out[:, -1].max() < 1e-4
    np.testing.assert_array_equal(out[:, :-1], 1)


def test_resize_near_black_last_row_matches_reference():
    im = np.random.RandomState(1).rand(1, 400, 2).astype(F)
    np.testing.assert_array_equal(resize_image(im, 2, 608), reference_resize(im, 2, 608))


def test_resize_480_to_416_last_row_fine():
    out = resize_image(np.ones((3, 480, 4), F), 4, 416)
    np.testing.assert_array_equal(out, 1)


def test_resize_bad_sizes():
    im = np.zeros((3, 4, 4), F)
    with pytest.raises(ValueError):
        resize_image(im, 0, 4)


# --------------------------------------------------------------------------- letterbox

@pytest.mark.parametrize("im_wh,net_wh,new_wh", [
    ((1920, 1080), (608, 608), (608, 342)),
    ((500, 375), (416, 416), (416, 312)),
    ((375, 500), (416, 416), (312, 416)),
    ((640, 640), (416, 416), (416, 416)),
    ((100, 300), (320, 160), (53, 160)),
    ((1000, 1), (416, 416), (416, 0)),
])
def test_letterbox_geometry(im_wh, net_wh, new_wh):
    assert letterbox_geometry(*im_wh, *net_wh) == new_wh


def test_letterbox_image_fill_and_content():
    im = np.random.RandomState(2).rand(3, 30, 40).astype(F)  # h=30, w=40
    out = letterbox_image(im, 32, 32)
    assert out.shape == (3, 32, 32) and out.dtype == F
    new_w, new_h = letterbox_geometry(40, 30, 32, 32)
    assert (new_w, new_h) == (32, 24)
    dy = (32 - 24) // 2
    np.testing.assert_array_equal(out[:, :dy], 0.5)
    np.testing.assert_array_equal(out[:, dy + 24:], 0.5)
    np.testing.assert_array_equal(out[:, dy:dy + 24], resize_image(im, 32, 24))


def test_letterbox_odd_padding_offset_rounds_down():
    im = np.zeros((3, 10, 30), F)          # -> new 9 x 3 (w=9, h=3) in a 9 x 8 box
    out = letterbox_image(im, 9, 8)
    assert letterbox_geometry(30, 10, 9, 8) == (9, 3)
    rows = np.flatnonzero(out[0, :, 0] == 0)
    assert rows.tolist() == [2, 3, 4]       # offset (8-3)/2 = 2


def test_prepare_image_modes():
    im = np.random.RandomState(3).rand(3, 20, 30).astype(F)
    np.testing.assert_array_equal(prepare_image(im, 16, 16, "stretch"), resize_image(im, 16, 16))
    np.testing.assert_array_equal(prepare_image(im, 16, 16), letterbox_image(im, 16, 16))
    crop = prepare_image(im, 16, 16, "crop")
    assert crop.shape == (3, 16, 16)
    small = resize_min(im, 16)                 # shorter side (h=20) -> 16, w = 30*16/20 = 24
    assert small.shape == (3, 16, 24)
    np.testing.assert_array_equal(crop, small[:, :, 4:20])
    np.testing.assert_array_equal(resize_min_crop(im, 16, 16), crop)
    with pytest.raises(ValueError):
        prepare_image(im, 16, 16, "zoom")


def test_crop_repeats_border():
    im = np.arange(12, dtype=F).reshape(1, 3, 4)
    out = crop_image(im, -1, 1, 3, 3)
    np.testing.assert_array_equal(out[0], [[4, 4, 5], [8, 8, 9], [8, 8, 9]])


# --------------------------------------------------------------------------- loading

def _save(tmp_path, name, pil, **kw):
    p = tmp_path / name
    pil.save(p, **kw)
    return p


def test_load_rgb_png(tmp_path):
    rgb = np.random.RandomState(4).randint(0, 256, (5, 7, 3), dtype=np.uint8)
    p = _save(tmp_path, "rgb.png", Image.fromarray(rgb, "RGB"))
    im = load_image(p)
    assert im.shape == (3, 5, 7) and im.dtype == F
    expected = (rgb.transpose(2, 0, 1).astype(np.float64) / 255.).astype(F)
    np.testing.assert_array_equal(im, expected)
    assert im.min() >= 0 and im.max() <= 1


def test_load_grey_rgba_palette(tmp_path):
    grey = np.random.RandomState(5).randint(0, 256, (4, 6), dtype=np.uint8)
    im = load_image(_save(tmp_path, "l.png", Image.fromarray(grey, "L")))
    assert im.shape == (3, 4, 6)
    for c in range(3):
        np.testing.assert_array_equal(im[c], (grey / 255.).astype(F))

    rgba = np.random.RandomState(6).randint(0, 256, (4, 6, 4), dtype=np.uint8)
    rgba[..., 3] = 0                                   # fully transparent: alpha is dropped
    im = load_image(_save(tmp_path, "rgba.png", Image.fromarray(rgba, "RGBA")))
    np.testing.assert_array_equal(im, (rgba[..., :3].transpose(2, 0, 1) / 255.).astype(F))

    pal = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), "P")
    pal.putpalette([255, 0, 0, 0, 128, 0, 10, 20, 30] + [0] * (256 * 3 - 9))
    im = load_image(_save(tmp_path, "p.png", pal, transparency=1))
    np.testing.assert_array_equal(im[:, 0, 0], (np.array([255, 0, 0]) / 255.).astype(F))
    np.testing.assert_array_equal(im[:, 0, 1], (np.array([0, 128, 0]) / 255.).astype(F))
    np.testing.assert_array_equal(im[:, 1, 0], (np.array([10, 20, 30]) / 255.).astype(F))


def test_load_16bit_keeps_high_byte(tmp_path):
    a = np.array([[0, 255, 256, 65535]], dtype=np.uint16)
    im = load_image(_save(tmp_path, "g16.png", Image.fromarray(a)))
    np.testing.assert_array_equal(im[0, 0], (np.array([0, 0, 1, 255]) / 255.).astype(F))


def test_load_ignores_exif_rotation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6                                   # "rotate 90 CW" orientation tag
    p = _save(tmp_path, "r.jpg", Image.new("RGB", (8, 4), (200, 10, 10)), exif=exif)
    assert load_image(p).shape == (3, 4, 8)


def test_to_chw_from_chw_round_trip():
    rgb = np.random.RandomState(7).randint(0, 256, (3, 5, 3), dtype=np.uint8)
    chw = to_chw(Image.fromarray(rgb, "RGB"))
    np.testing.assert_array_equal(np.asarray(from_chw(chw)), rgb)


def _assert_image_error(path):
    with pytest.raises(ImageError) as e:
        load_image(path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg
    return msg


def test_load_errors(tmp_path):
    _assert_image_error(tmp_path / "missing.png")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    _assert_image_error(empty)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3)
    _assert_image_error(junk)
    _assert_image_error(tmp_path)                       # a directory
    good = _save(tmp_path, "good.png",
                 Image.fromarray(np.random.RandomState(8).randint(0, 256, (64, 64, 3), np.uint8)))
    data = good.read_bytes()
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(data[: len(data) // 2])
    _assert_image_error(trunc)
    good_jpg = _save(tmp_path, "good.jpg", Image.open(good))
    data = good_jpg.read_bytes()
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(data[: len(data) // 2])
    _assert_image_error(trunc)


def test_load_decompression_bomb(tmp_path, monkeypatch):
    p = _save(tmp_path, "big.png", Image.new("RGB", (64, 64)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert "too large" in _assert_image_error(p)


# --------------------------------------------------------------------------- saving

def test_save_png_round_trip(tmp_path):
    rgb = np.random.RandomState(9).randint(0, 256, (6, 5, 3), dtype=np.uint8)
    im = load_image(_save(tmp_path, "a.png", Image.fromarray(rgb, "RGB")))
    out = tmp_path / "b.png"
    save_image(out, im)
    np.testing.assert_array_equal(load_image(out), im)
    assert sorted(os.listdir(tmp_path)) == ["a.png", "b.png"]   # no temp file left behind


def test_save_grey_jpg_and_clipping(tmp_path):
    a = np.linspace(-1, 2, 4 * 5, dtype=F).reshape(1, 4, 5)
    out = tmp_path / "g.png"
    save_image(out, a)
    back = np.asarray(Image.open(out))
    assert back.shape == (4, 5)
    assert back.min() == 0 and back.max() == 255
    jpg = tmp_path / "c.jpg"
    save_image(jpg, np.full((3, 8, 8), 0.5, F))
    assert load_image(jpg).shape == (3, 8, 8)


def test_save_errors(tmp_path):
    with pytest.raises(ImageError, match="channels"):
        save_image(tmp_path / "x.png", np.zeros((2, 4, 4), F))
    with pytest.raises(ImageError, match="x.png"):
        save_image(tmp_path / "x.png", np.zeros((4, 4), F))
    with pytest.raises(ImageError, match="extension"):
        save_image(tmp_path / "x.nope", np.zeros((3, 4, 4), F))
    with pytest.raises(ImageError, match="no_dir"):
        save_image(tmp_path / "no_dir" / "x.png", np.zeros((3, 4, 4), F))
    assert os.listdir(tmp_path) == []
