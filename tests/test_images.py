"""Photos as model inputs: crops, grid views, and the unlabelled photos of the data packages."""

import numpy as np
from PIL import Image

from conformance.inputs import GRID_SCALES, PHOTOS, UNLABELLED_PHOTOS, grid_views, photo_views, unlabelled_views
from nnr.images import labelled_photos


def _photo(tmp_path, w=300, h=200):
    rng = np.random.default_rng(0)
    path = tmp_path / "p.png"
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def test_grid_views_cover_scales_positions_and_mirrors(tmp_path):
    path = _photo(tmp_path)                                    # 300 × 200: the full-height view slides sideways only
    x = grid_views(path, size=32, per_side=3)
    assert x.shape == ((3 + 9 * (len(GRID_SCALES) - 1)) * 2, 3, 32, 32) and x.dtype == np.float32
    np.testing.assert_array_equal(x[1], x[0][:, :, ::-1])     # every view is followed by its mirror
    flat = x.reshape(len(x), -1)
    assert len(np.unique(flat, axis=0)) == len(x)             # no view is repeated
    with Image.open(path) as im:                               # the first view: top-left square, whole height
        first = np.asarray(im.convert("RGB").crop((0, 0, 200, 200)).resize((32, 32), Image.BILINEAR))
    np.testing.assert_array_equal(x[0], ((first.astype(np.float32) - 127) / 128).transpose(2, 0, 1))


def test_photo_views_keep_labels_and_unlabelled_photos_are_all_there():
    x, y = photo_views([0, 3])
    n = len(grid_views(labelled_photos(PHOTOS)[0][0]))
    assert x.shape == (len(y), 3, 224, 224) and len(y) == 2 * n           # both photos are square
    assert list(y) == [labelled_photos(PHOTOS)[0][1]] * n + [labelled_photos(PHOTOS)[3][1]] * n
    u = unlabelled_views()
    assert len(u) >= 2 * len(UNLABELLED_PHOTOS) and u.shape[1:] == (3, 224, 224)
    assert np.isfinite(u).all() and -1.0 <= u.min() and u.max() <= 1.0


def test_make_calibration_writes_views_and_refuses_bad_ranges(tmp_path):
    import onnx
    import pytest

    from nnr.calibration import load_calibration
    from tests.conftest import EFFNET
    from tools import make_calibration

    out = tmp_path / "cal.npz"
    assert make_calibration.main(["imagenet", "--photos", "0:2", "--views", "-o", str(out)]) == 0
    cal = load_calibration(out, onnx.load(EFFNET, load_external_data=False))
    assert len(cal) == len(photo_views([0, 1])[0]) and cal.labels is not None
    for bad in ("5:4", "0:21", "x"):
        with pytest.raises(SystemExit) as exc:
            make_calibration.main(["imagenet", "--photos", bad, "-o", str(tmp_path / "bad.npz")])
        assert exc.value.code == 2
    assert not (tmp_path / "bad.npz").exists()
