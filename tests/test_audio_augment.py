"""Each audio augmentation on a known signal, and their counter-based draws."""

import math

import numpy as np
import pytest

from input_pipeline import randomness
from input_pipeline.audio import augment

SR = 16_000
N = 16_000  # One second: rfft bins are 1 Hz apart.
TESTED = set()


def _apply(name, params, x, draws=None, background=None):
  TESTED.add(name)
  aug = augment.AUGMENTATIONS.get(name)
  assert len(x) == aug.input_length(params, N)
  return aug.apply(np.asarray(x, np.float64), N, params,
                   draws or randomness.Draws(0, 0, 999), background)


def _tone(length, hz, amplitude=0.3):
  return amplitude * np.sin(2 * np.pi * hz * np.arange(length) / SR)


def _am_tone(length, carrier=1000.0, envelope=8.0):
  """A carrier whose amplitude swings at `envelope` Hz: sidebands at +-env."""
  t = np.arange(length) / SR
  return (0.3 * (1 + 0.5 * np.cos(2 * np.pi * envelope * t))
          * np.sin(2 * np.pi * carrier * t))


def _spectrum(y):
  return np.abs(np.fft.rfft(y * np.hanning(len(y))))


def _carrier_and_sideband(y, near):
  """Strongest frequency near `near` and the strongest 4-40 Hz beside it."""
  spectrum = _spectrum(y)
  carrier = near - 60 + int(np.argmax(spectrum[near - 60:near + 61]))
  offsets = np.r_[-40:-3, 4:41]
  sideband = offsets[np.argmax(spectrum[carrier + offsets])]
  return carrier, abs(int(sideband))


def _band_power(y, lo, hi):
  power = np.abs(np.fft.rfft(y)) ** 2
  return power[lo:hi].sum()


def test_draws_are_a_pure_function_of_seed_key_stream():
  a, b = randomness.Draws(7, 3, 404), randomness.Draws(7, 3, 404)
  first = a.uniform(5)
  np.testing.assert_array_equal(first, b.uniform(5))
  # The next call continues the counters instead of repeating them.
  assert not np.array_equal(a.uniform(5), first)
  assert not np.array_equal(randomness.Draws(7, 4, 404).uniform(5), first)
  normal = randomness.Draws(1, 2, 3).normal(200_000)
  assert abs(normal.mean()) < 0.01 and abs(normal.std() - 1) < 0.01


def test_plan_is_keyed_and_respects_p():
  streams = augment.Streams(1, 2, 3, 4)
  plans = [augment.draw_plan(augment.NAMES, 0.5, 0, k, streams)
           for k in range(400)]
  assert plans == [augment.draw_plan(augment.NAMES, 0.5, 0, k, streams)
                   for k in range(400)]
  applied = [p for p in plans if p.name is not None]
  assert 150 < len(applied) < 250
  assert {p.name for p in applied} == set(augment.NAMES)
  assert all(augment.draw_plan(augment.NAMES, 0.0, 0, k, streams).name is None
             for k in range(50))
  with pytest.raises(KeyError, match="Unknown audio augmentation.*gain"):
    augment.check_names(("gain", "echo"))


def test_gain_scales_by_decibels():
  x = _tone(N, 440)
  np.testing.assert_allclose(_apply("gain", {"db": 6.0}, x),
                             x * 10 ** (6 / 20), rtol=1e-12)


def test_speed_raises_pitch_and_tempo_together():
  params = {"factor": 1.25}
  length = augment.AUGMENTATIONS.get("speed").input_length(params, N)
  y = _apply("speed", params, _am_tone(length))
  carrier, sideband = _carrier_and_sideband(y, 1250)
  assert carrier == 1250 and sideband == 10  # 1000 Hz and 8 Hz, x 1.25.
  assert np.sqrt(np.mean(y ** 2)) == pytest.approx(0.225, rel=0.02)


def test_time_stretch_changes_tempo_not_pitch():
  for rate, sideband_hz in ((1.25, 10), (0.8, 6)):  # 8 Hz x rate (6.4).
    params = {"rate": rate}
    length = augment.AUGMENTATIONS.get("time_stretch").input_length(params, N)
    carrier, sideband = _carrier_and_sideband(
        _apply("time_stretch", params, _am_tone(length)), 1000)
    assert abs(carrier - 1000) <= 1 and sideband == sideband_hz


def test_pitch_shift_changes_pitch_not_tempo():
  for semitones, expected in ((12.0, 2000), (-5.0, 749)):
    params = {"semitones": semitones}
    length = augment.AUGMENTATIONS.get("pitch_shift").input_length(params, N)
    carrier, sideband = _carrier_and_sideband(
        _apply("pitch_shift", params, _am_tone(length)), expected)
    assert abs(carrier - expected) <= 1 and sideband == 8


@pytest.mark.parametrize("name", ["white_noise", "pink_noise"])
def test_noise_is_added_at_the_snr_with_its_spectrum(name):
  x = _tone(N, 440, amplitude=0.2)
  y = _apply(name, {"snr_db": 10.0}, x, randomness.Draws(3, 1, 405))
  noise = y - x
  expected_rms = 0.2 / math.sqrt(2) * 10 ** (-10 / 20)
  assert np.sqrt(np.mean(noise ** 2)) == pytest.approx(expected_rms, rel=1e-6)
  # White: equal power per Hz; pink: equal power per octave.
  per_octave = _band_power(noise, 2000, 4000) / _band_power(noise, 500, 1000)
  assert per_octave == pytest.approx(4.0 if name == "white_noise" else 1.0,
                                     rel=0.2)
  again = _apply(name, {"snr_db": 10.0}, x, randomness.Draws(3, 1, 405))
  np.testing.assert_array_equal(y, again)


def test_background_mixes_the_source_at_its_offset_and_snr():
  x = _tone(N, 440, amplitude=0.2)
  background = (_tone(5 * N, 3000, amplitude=0.5) * 32768).astype(np.int16)
  y = _apply("background", {"snr_db": 6.0, "offset": 0.5}, x,
             background=background)
  start = int(0.5 * (len(background) - N + 1))
  other = background[start:start + N] / 32768.0
  scale = (0.2 / math.sqrt(2)) * 10 ** (-6 / 20) / np.sqrt(np.mean(other ** 2))
  np.testing.assert_allclose(y - x, other * scale, atol=1e-12)


def test_clicks_sit_at_their_interval():
  y = _apply("clicks", {"interval_s": 0.25, "phase": 0.5, "amplitude": 0.3},
             np.zeros(N))
  expected = np.zeros(N)
  for centre in (2000, 6000, 10000, 14000):  # 0.125 s + k 0.25 s.
    expected[centre - 16:centre + 17] += 0.3 * np.hanning(33)
  np.testing.assert_allclose(y, expected, atol=1e-15)


def test_clipping_clips_the_loudest_fraction():
  x = _tone(N, 441, amplitude=0.5)  # 16,000 distinct phases.
  y = _apply("clipping", {"fraction": 0.2}, x)
  # |sin| exceeds cos(pi f / 2) on a fraction f of a period.
  threshold = 0.5 * math.cos(math.pi * 0.2 / 2)
  assert np.abs(y).max() == pytest.approx(threshold, rel=1e-3)
  below = np.abs(x) < threshold * 0.999
  np.testing.assert_array_equal(y[below], x[below])
  assert np.mean(~below) == pytest.approx(0.2, abs=0.01)


@pytest.mark.parametrize("name,gain", [
    ("low_pass", augment.low_pass_gain), ("high_pass", augment.high_pass_gain)])
def test_filters_have_butterworth_gains(name, gain):
  x = _tone(N, 200) + _tone(N, 6000)
  y = _apply(name, {"cutoff_hz": 1000.0}, x)
  ratio = np.abs(np.fft.rfft(y)) / np.maximum(np.abs(np.fft.rfft(x)), 1e-9)
  for hz in (200, 6000):
    assert ratio[hz] == pytest.approx(gain(np.array([hz]), 1000.0)[0], rel=1e-6)
  # Order 4: (f / fc)^-4 far from the cutoff, 1 far inside it.
  stop, passed = (6000, 200) if name == "low_pass" else (200, 6000)
  assert ratio[stop] < 2e-3 and ratio[passed] > 0.999


def test_reverb_decays_60_db_in_rt60():
  impulse = np.zeros(N)
  impulse[0] = 1.0
  params = {"rt60": 0.6, "wet": 0.5}
  y = _apply("reverb", params, impulse, randomness.Draws(5, 0, 405))
  response = augment.reverb_impulse_response(randomness.Draws(5, 0, 405), 0.6)
  np.testing.assert_allclose(y[1:len(response)], 0.5 * response[1:],
                             atol=1e-12)
  assert y[0] == pytest.approx(0.5 + 0.5 * response[0])
  energy = lambda a, b: np.sum(y[int(a * SR):int(b * SR)] ** 2)
  drop_db = 10 * math.log10(energy(0.1, 0.2) / energy(0.3, 0.4))
  assert drop_db == pytest.approx(60 * 0.2 / 0.6, abs=2.0)


def test_apply_plan_without_augmentation_passes_the_clip():
  x = _tone(N + 100, 440)
  out = augment.apply_plan(augment.Plan(None, {}), x, N, 0, 0,
                           augment.Streams(1, 2, 3, 4), None)
  np.testing.assert_array_equal(out, x[:N])
  np.testing.assert_array_equal(
      augment.to_int16(np.array([1.5, -1.5, 0.5, -0.25])),
      np.array([32767, -32768, 16384, -8192], np.int16))


def test_zz_every_augmentation_is_tested():
  # Runs last (file order): every catalogue entry met a known signal above.
  assert TESTED == set(augment.NAMES)
