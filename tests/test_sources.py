"""Tests of input_pipeline.image.sources: decoding, conversions and clear errors."""

import numpy as np
from PIL import Image
import pytest

from input_pipeline.image import sources


def _gradient(height=40, width=60):
  y, x = np.mgrid[0:height, 0:width]
  return np.stack([x * 4, y * 6, (x + y) * 2], axis=-1).astype(np.uint8)


def test_rgb_png_roundtrip(tmp_path):
  image = _gradient()
  Image.fromarray(image).save(tmp_path / "a.png")
  np.testing.assert_array_equal(
      sources.load_source_image(str(tmp_path / "a.png")), image)


def test_grayscale_is_replicated(tmp_path):
  gray = _gradient()[..., 0]
  Image.fromarray(gray, "L").save(tmp_path / "g.png")
  loaded = sources.load_source_image(str(tmp_path / "g.png"))
  assert loaded.shape == (40, 60, 3) and loaded.dtype == np.uint8
  for c in range(3):
    np.testing.assert_array_equal(loaded[..., c], gray)


def test_rgba_drops_alpha(tmp_path):
  rgba = np.concatenate([_gradient(), np.zeros((40, 60, 1), np.uint8)], -1)
  rgba[:, :30, 3] = 255  # Half transparent, half opaque: colours are kept.
  Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
  loaded = sources.load_source_image(str(tmp_path / "a.png"))
  np.testing.assert_array_equal(loaded, rgba[..., :3])


def test_16bit_png_scaled_to_8bit(tmp_path):
  values = (np.arange(40 * 60).reshape(40, 60) * 27).astype(np.uint16)
  Image.fromarray(values).save(tmp_path / "d.png")
  assert Image.open(tmp_path / "d.png").mode == "I;16"
  loaded = sources.load_source_image(str(tmp_path / "d.png"))
  expected = np.round(values / 257.0).astype(np.uint8)
  np.testing.assert_array_equal(loaded[..., 1], expected)
  assert loaded.max() > 200  # Uses the 8-bit range, not values // 256 ~ 0.


def test_exif_rotation_applied(tmp_path):
  image = np.zeros((20, 50, 3), np.uint8)
  image[:, :10] = 255  # A white band on the left of the stored pixels.
  pil = Image.fromarray(image)
  exif = pil.getexif()
  exif[0x0112] = 6  # Orientation: rotate 90 CW to display.
  pil.save(tmp_path / "r.jpg", exif=exif, quality=95)
  loaded = sources.load_source_image(str(tmp_path / "r.jpg"))
  assert loaded.shape == (50, 20, 3)
  # After a 90-degree clockwise rotation the band is at the top.
  assert loaded[:8].mean() > 200 and loaded[12:].mean() < 50


def test_shared_dir_expansion(tmp_path, monkeypatch):
  Image.fromarray(_gradient()).save(tmp_path / "x.png")
  monkeypatch.setenv("SID_SHARED_DIR", str(tmp_path))
  assert sources.load_source_image("$SID_SHARED_DIR/x.png").shape == (40, 60, 3)


def test_missing_file_names_path(tmp_path):
  path = str(tmp_path / "nope.jpg")
  with pytest.raises(FileNotFoundError, match="nope.jpg"):
    sources.load_source_image(path)


def test_corrupt_file_names_path(tmp_path):
  path = tmp_path / "bad.jpg"
  path.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
  with pytest.raises(ValueError, match="bad.jpg"):
    sources.load_source_image(str(path))


def test_small_image_errors_name_sizes():
  with pytest.raises(ValueError, match=r"20x30.*patch size 32"):
    sources.check_image_size((20, 30), 32, 0.5)
  with pytest.raises(ValueError, match=r"25x25.*patch size 32"):
    sources.check_image_size((50, 60), 32, 0.5)
  sources.check_image_size((64, 70), 32, 0.5)


def test_skimage_source():
  image = sources.load_source_image("skimage:astronaut")
  assert image.shape == (512, 512, 3) and image.dtype == np.uint8


def test_unknown_skimage_lists_valid_names():
  with pytest.raises(ValueError, match="astronaut"):
    sources.load_source_image("skimage:no_such_photo")


def test_noise_image_is_fixed():
  a = sources.load_source_image("noise:uniform_image:64x48")
  assert a.shape == (64, 48, 3)
  np.testing.assert_array_equal(
      a, sources.load_source_image("noise:uniform_image:64x48"))
  assert sources.load_source_image("noise:uniform_image").shape == (
      1024, 1024, 3)
  with pytest.raises(ValueError, match="noise:bogus"):
    sources.load_source_image("noise:bogus")


# Clipping N(0.5, 0.25^2) to [0, 1] (at 2 sigma) shrinks its std to 0.2399.
@pytest.mark.parametrize("spec,mean,std", [("noise:uniform", 0.5, 0.2887),
                                           ("noise:normal", 0.5, 0.2399)])
def test_noise_inputs_per_index(spec, mean, std):
  patches = sources.noise_patches(spec, 0, np.arange(6), 32)
  assert patches.shape == (6, 32, 32, 3) and patches.dtype == np.uint8
  x = patches / 255.0
  assert abs(x.mean() - mean) < 0.01 and abs(x.std() - std) < 0.01
  # Patch i depends only on (seed, i).
  np.testing.assert_array_equal(
      sources.noise_patches(spec, 0, [4, 1], 32), patches[[4, 1]])
  assert not np.array_equal(sources.noise_patches(spec, 1, [4], 32),
                            patches[[4]])
  with pytest.raises(ValueError, match="per-patch noise"):
    sources.load_source_image(spec)
