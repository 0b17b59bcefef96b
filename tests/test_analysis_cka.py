"""Linear CKA (big_vision_sid/analysis/cka.py) against plain numpy references."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_sid import models
from big_vision_sid.analysis import cka
from big_vision_sid.analysis import common


def _gram(x: np.ndarray) -> np.ndarray:
  return x @ x.T


def _feature_space_cka(x: np.ndarray, y: np.ndarray) -> float:
  """Kornblith et al.'s eq. (3): ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)."""
  x = x - x.mean(axis=0)
  y = y - y.mean(axis=0)
  return (np.linalg.norm(y.T @ x) ** 2
          / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def _u_statistic_hsic(k: np.ndarray, l: np.ndarray) -> float:
  """HSIC = E k_ij l_ij + E k_ij E l_qr - 2 E k_ij l_iq over distinct indices,
  each expectation the U-statistic over all ordered tuples of distinct indices
  (the definition Song et al.'s closed form estimates, summed by brute force)."""
  n = len(k)
  a = np.mean([k[i, j] * l[i, j]
               for i, j in itertools.permutations(range(n), 2)])
  b = np.mean([k[i, j] * l[q, r]
               for i, j, q, r in itertools.permutations(range(n), 4)])
  c = np.mean([k[i, j] * l[i, q]
               for i, j, q in itertools.permutations(range(n), 3)])
  return a + b - 2 * c


def _correlated(rng: np.random.Generator, n: int, p: int, q: int,
                noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
  """Two views of a shared 4-d latent, with independent noise."""
  z = rng.normal(size=(n, 4))
  x = z @ rng.normal(size=(4, p)) + noise * rng.normal(size=(n, p))
  y = np.tanh(z @ rng.normal(size=(4, q))) + noise * rng.normal(size=(n, q))
  return x, y


def test_unbiased_hsic_equals_the_u_statistic_definition():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 5))
  k, l = _gram(x), _gram(y)
  hsic = cka.pairwise_hsic(k[None], l[None], unbiased=True)[0, 0]
  assert hsic == pytest.approx(_u_statistic_hsic(k, l), rel=1e-9, abs=1e-12)


def test_full_batch_cka_equals_the_feature_space_formula():
  rng = np.random.default_rng(1)
  xs = [rng.normal(size=(50, p)) for p in (3, 20)]
  ys = [rng.normal(size=(50, q)) + xs[0][:, :1] for q in (4, 7, 60)]
  matrix = cka.cka_matrix(np.stack([_gram(x) for x in xs]),
                          np.stack([_gram(y) for y in ys]))
  expected = [[_feature_space_cka(x, y) for y in ys] for x in xs]
  np.testing.assert_allclose(matrix, expected, rtol=1e-10)


@pytest.mark.parametrize("unbiased", [False, True])
def test_self_similarity_is_one_and_invariances(unbiased):
  rng = np.random.default_rng(2)
  x, y = _correlated(rng, 64, 10, 6)
  rotation, _ = np.linalg.qr(rng.normal(size=(10, 10)))
  # Rotated, isotropically scaled and shifted features: the same representation.
  transformed = 3.7 * x @ rotation + 5.0
  grams = np.stack([_gram(x), _gram(transformed)])
  same = cka.cka_matrix(grams, grams, unbiased=unbiased)
  np.testing.assert_allclose(same, 1.0, rtol=1e-9)
  against_y = cka.cka_matrix(grams, _gram(y)[None], unbiased=unbiased)[:, 0]
  assert 0.05 < against_y[0] < 0.99
  assert against_y[1] == pytest.approx(against_y[0], rel=1e-9)
  # A non-isotropic scaling is not an invariance.
  stretched = x * np.linspace(0.1, 3.0, 10)
  assert cka.cka_matrix(_gram(stretched)[None], _gram(y)[None],
                        unbiased=unbiased)[0, 0] != pytest.approx(
                            against_y[0], rel=1e-3)


def test_independent_features_minibatch_near_zero_biased_not():
  # For independent isotropic Gaussian X [n, p], Y [n, p], each off-diagonal
  # term of tr(K~ L~) has variance p^2 and HSIC_u(X, X) ~ p, so one batch of
  # b gives CKA with sd ~ sqrt(2) / b, and m batches sd ~ sqrt(2) / (m b);
  # the biased estimator sits near p / (n + p) instead.
  rng = np.random.default_rng(3)
  n, p, b = 512, 64, 128
  x, y = rng.normal(size=(n, p)), rng.normal(size=(n, p))
  accumulator = cka.MinibatchCKA()
  for rows in np.split(np.arange(n), n // b):
    accumulator.update(_gram(x[rows])[None], _gram(y[rows])[None])
  assert accumulator.batches == n // b
  assert abs(accumulator.result()[0, 0]) < 5 * np.sqrt(2) / n
  biased = cka.cka_matrix(_gram(x)[None], _gram(y)[None])[0, 0]
  assert biased == pytest.approx(p / (n + p), rel=0.25)


def test_minibatch_cka_matches_full_batch_on_small_data():
  rng = np.random.default_rng(4)
  n, b = 2048, 256
  x, y = _correlated(rng, n, 8, 6)
  batches = np.split(rng.permutation(n), n // b)
  accumulator = cka.MinibatchCKA()
  per_batch = []
  for rows in batches:
    kx, ky = _gram(x[rows])[None], _gram(y[rows])[None]
    accumulator.update(kx, ky)
    per_batch.append(cka.cka_matrix(kx, ky, unbiased=True)[0, 0])
  minibatch = accumulator.result()[0, 0]
  full_unbiased = cka.cka_matrix(_gram(x)[None], _gram(y)[None],
                                 unbiased=True)[0, 0]
  full_biased = cka.cka_matrix(_gram(x)[None], _gram(y)[None])[0, 0]
  # Both estimate the same population CKA. The full-batch estimate is the more
  # precise one and is positively correlated with the minibatch one, so their
  # difference has an sd below the minibatch estimate's, about sd(per batch)
  # / sqrt(m): 4 of those is a 4-sigma bound. The biased estimator adds a
  # bias of order p / n (8 / 2048), covered by 0.01.
  tolerance = 4 * np.std(per_batch, ddof=1) / np.sqrt(len(batches))
  assert 0.2 < minibatch < 0.95
  assert abs(minibatch - full_unbiased) < tolerance
  assert abs(minibatch - full_biased) < tolerance + 0.01
  # One minibatch holding everything is the full-batch unbiased estimate.
  single = cka.MinibatchCKA()
  single.update(_gram(x)[None], _gram(y)[None])
  assert single.result()[0, 0] == pytest.approx(full_unbiased, rel=1e-12)


def test_errors():
  with pytest.raises(ValueError, match="at least 4 examples"):
    cka.pairwise_hsic(np.eye(3)[None], np.eye(3)[None], unbiased=True)
  with pytest.raises(ValueError, match="no minibatch"):
    cka.MinibatchCKA().result()


@pytest.mark.parametrize("num, size", [(1017, 256), (10, 256), (9, 4), (5, 4)])
def test_minibatch_indices_cover_every_image_once(num, size):
  batches = cka.minibatch_indices(num, size, seed=0)
  assert sorted(np.concatenate(batches).tolist()) == list(range(num))
  lengths = [len(b) for b in batches]
  assert max(lengths) - min(lengths) <= 1 and min(lengths) >= 4
  # ceil(num / size) batches, fewer only where that would make them < 4.
  assert len(batches) == max(1, min(-(-num // size), num // 4))
  if len(batches) == -(-num // size):
    assert max(lengths) <= size


class _Plain(nn.Module):
  """No blocks: two convs and a classifier (like VGG)."""

  @nn.compact
  def __call__(self, x, train=False):
    del train
    x = nn.relu(nn.Conv(4, (3, 3), name="conv_a")(x))
    x = nn.relu(nn.Conv(5, (3, 3), name="conv_b")(x))
    return nn.Dense(3, name="head")(x.mean(axis=(1, 2)))


def _network(module, variables) -> common.Network:
  return common.Network("net", "net", module, module.apply, variables,
                        (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def _random_variables(module: nn.Module, x: jax.Array):
  """Random variables of `module` without compiling its init (slow on CPU)."""
  rng = np.random.default_rng(0)
  shapes = jax.eval_shape(module.init, jax.random.key(0), x)
  return jax.tree_util.tree_map_with_path(
      lambda path, s: (np.ones(s.shape, np.float32) if path[-1].key == "var"
                       else 0.2 * rng.normal(size=s.shape).astype(np.float32)),
      shapes)


def test_layers_are_the_blocks_and_the_logits():
  module = models.build_model("cifar_resnet8", 10)
  x = jax.random.uniform(jax.random.key(0), (3, 32, 32, 3))
  variables = _random_variables(module, x)
  net = _network(module, variables)
  names = common.layer_names(net, (32, 32, 3))
  assert names == ["layer1_0", "layer2_0", "layer3_0", common.LOGITS]
  outputs = jax.jit(lambda v, x: common.capture_layers(net, v, x, names))(
      variables, x)
  assert [o.shape for o in outputs] == [(3, 32, 32, 16), (3, 16, 16, 32),
                                        (3, 8, 8, 64), (3, 10)]
  np.testing.assert_allclose(outputs[-1], jax.jit(module.apply)(variables, x),
                             rtol=1e-5, atol=1e-6)
  # The block output is what the next block reads: layer2_0 of layer1_0's output.
  block = models.cifar_resnet.BasicBlock(32, 2)
  block_variables = {"params": variables["params"]["layer2_0"],
                     "batch_stats": variables["batch_stats"]["layer2_0"]}
  np.testing.assert_allclose(jax.jit(block.apply)(block_variables, outputs[0]),
                             outputs[1], rtol=1e-5, atol=1e-6)

  plain = _Plain()
  plain_variables = _random_variables(plain, jnp.zeros((1, 8, 8, 3)))
  assert common.layer_names(_network(plain, plain_variables), (8, 8, 3)) == [
      "conv_a", "conv_b", common.LOGITS]
