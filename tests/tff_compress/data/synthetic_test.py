"""synthetic(alpha, beta): determinism, laziness, the generator's statistics."""

from __future__ import annotations

import math
import time
import tracemalloc

from absl.testing import absltest
from absl.testing import parameterized
import ml_collections
import numpy as np

from tff_compress.data import federated_data
from tff_compress import config_lib
from tff_compress.data import registry
from tff_compress.data import settings as data_settings
from tff_compress.data import synthetic

DataError = federated_data.DataError
FEDPROX = synthetic.SIZE_LAWS['fedprox']
LEAF = synthetic.SIZE_LAWS['leaf']


def _gen(num_clients=200, alpha=1.0, beta=1.0, iid=False, law=LEAF, seed=0):
  return synthetic.SyntheticGenerator(num_clients, alpha, beta, iid=iid,
                                      size_law=law, seed=seed)


def _cfg(**overrides) -> data_settings.DataSettings:
  return data_settings.DataSettings(
      name='synthetic', num_clients=1000, synthetic_alpha=1.0,
      synthetic_beta=1.0, synthetic_sizes='fedprox').replace(**overrides)


def _normal_cdf(z: float) -> float:
  return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _label_entropy(y: np.ndarray) -> float:
  p = np.bincount(y, minlength=synthetic.NUM_CLASSES) / len(y)
  p = p[p > 0]
  return float(-(p * np.log(p)).sum())


class DeterminismTest(absltest.TestCase):

  def test_a_client_is_the_same_whenever_and_wherever_it_is_built(self):
    a, b = _gen(seed=5), _gen(seed=5)
    for k in (3, 117, 42):  # a builds others first, b builds 42 alone
      a.client(k)
    xa, ya = a.client(42)
    xb, yb = b.client(42)
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    xa2, ya2 = a.client(42)
    np.testing.assert_array_equal(xa, xa2)
    np.testing.assert_array_equal(ya, ya2)

  def test_client_does_not_depend_on_the_number_of_clients(self):
    # Only the size vector is drawn for all clients; a client's examples
    # depend on (seed, index). Same size law and seed: the first clients of
    # a bigger population are the same clients.
    small, big = _gen(num_clients=50, seed=2), _gen(num_clients=5000, seed=2)
    np.testing.assert_array_equal(small.sizes, big.sizes[:50])
    for k in (0, 49):
      np.testing.assert_array_equal(small.client(k)[0], big.client(k)[0])

  def test_seed_changes_everything(self):
    a, b = _gen(seed=0), _gen(seed=1)
    self.assertFalse(np.array_equal(a.sizes, b.sizes))
    self.assertFalse(np.array_equal(a.held_out(0, 10)[0],
                                    b.held_out(0, 10)[0]))
    self.assertFalse(np.array_equal(a.test_split()[0], b.test_split()[0]))

  def test_clients_and_streams_are_distinct(self):
    g = _gen()
    x0 = g.held_out(0, 5)[0]
    self.assertFalse(np.array_equal(x0, g.held_out(1, 5)[0]))
    self.assertFalse(np.array_equal(g.client(0)[0][:5], x0))

  def test_held_out_prefix(self):
    g = _gen()
    long_x, long_y = g.held_out(7, 40)
    short_x, short_y = g.held_out(7, 15)
    np.testing.assert_array_equal(long_x[:15], short_x)
    np.testing.assert_array_equal(long_y[:15], short_y)


class GeneratorTest(parameterized.TestCase):

  @parameterized.parameters(False, True)
  def test_shapes_dtypes_and_sizes(self, iid):
    g = _gen(iid=iid)
    self.assertEqual(g.sizes.dtype, np.int64)
    self.assertFalse(g.sizes.flags.writeable)
    for k in (0, 13, 199):
      x, y = g.client(k)
      self.assertEqual(x.shape, (g.sizes[k], synthetic.DIM))
      self.assertEqual(x.dtype, np.float32)
      self.assertEqual(y.dtype, np.int32)
      self.assertTrue(np.all((y >= 0) & (y < synthetic.NUM_CLASSES)))
      self.assertTrue(np.all(np.isfinite(x)))

  @parameterized.parameters(False, True)
  def test_labels_are_the_argmax_of_the_client_model(self, iid):
    g = _gen(iid=iid)
    for k in (2, 50):
      model = g.client_model(k)
      x, y = g.client(k)
      logits = x.astype(np.float64) @ model.weights + model.bias
      np.testing.assert_array_equal(y, np.argmax(logits, axis=1))
      self.assertEqual(model.weights.shape,
                       (synthetic.DIM, synthetic.NUM_CLASSES))
      self.assertEqual(model.bias.shape, (synthetic.NUM_CLASSES,))
      self.assertEqual(model.mean.shape, (synthetic.DIM,))

  def test_features_are_gaussian_around_the_client_mean(self):
    # x ~ N(v_k, Sigma), Sigma_jj = j^-1.2: per-coordinate sample means and
    # variances of 20,000 held-out examples.
    g = _gen(beta=2.0)
    model = g.client_model(3)
    x, _ = g.held_out(3, 20000)
    sd = np.sqrt(synthetic.FEATURE_VARIANCES)
    # Standard error of a mean is sd / sqrt(20000); 5 of them.
    np.testing.assert_array_less(np.abs(x.mean(axis=0) - model.mean),
                                 5 * sd / math.sqrt(20000))
    # The relative standard error of a variance is sqrt(2 / 20000) = 1 %.
    np.testing.assert_allclose(x.var(axis=0), synthetic.FEATURE_VARIANCES,
                               rtol=0.05)

  def test_client_models_follow_the_hierarchy(self):
    # v_kj ~ N(B_k, 1), B_k ~ N(0, beta^2): the coordinate mean of v_k has
    # variance beta^2 + 1/60 across clients, its spread within a client is
    # N(0, 1). W_k, b_k ~ N(u_k, 1), u_k ~ N(0, alpha^2): the entry mean has
    # variance alpha^2 + 1/610.
    alpha, beta, n = 0.7, 2.0, 3000
    g = _gen(num_clients=n, alpha=alpha, beta=beta)
    models = [g.client_model(k) for k in range(n)]
    v = np.stack([m.mean for m in models])
    wb = np.stack([np.concatenate([m.weights.ravel(), m.bias])
                   for m in models])
    # Relative standard error of a variance over 3000 clients: 2.6 %.
    np.testing.assert_allclose(v.mean(axis=1).var(), beta**2 + 1 / 60,
                               rtol=0.12)
    np.testing.assert_allclose(wb.mean(axis=1).var(), alpha**2 + 1 / 610,
                               rtol=0.12)
    np.testing.assert_allclose((v - v.mean(axis=1, keepdims=True)).var(),
                               59 / 60, rtol=0.03)
    np.testing.assert_allclose((wb - wb.mean(axis=1, keepdims=True)).var(),
                               609 / 610, rtol=0.03)

  def test_alpha_never_changes_a_label(self):
    # u_k shifts all logits of an example alike (see the module docstring):
    # for one seed, features and labels are identical for every alpha while
    # the client models differ.
    reference = _gen(alpha=0.0)
    for alpha in (0.5, 3.0, 30.0):
      g = _gen(alpha=alpha)
      for k in (0, 5, 77):
        x_ref, y_ref = reference.held_out(k, 500)
        x, y = g.held_out(k, 500)
        np.testing.assert_array_equal(x, x_ref)
        np.testing.assert_array_equal(y, y_ref)
        self.assertFalse(np.array_equal(g.client_model(k).weights,
                                        reference.client_model(k).weights))

  def test_label_skew_grows_with_beta_and_vanishes_when_iid(self):
    # Mean per-client label entropy (nats) over 300 clients of 200 examples.
    def mean_entropy(**kwargs):
      g = _gen(num_clients=300, **kwargs)
      return np.mean([_label_entropy(g.held_out(k, 200)[1])
                      for k in range(300)])

    entropies = [mean_entropy(beta=beta) for beta in (0.0, 1.0, 4.0)]
    self.assertGreater(entropies[0], entropies[1] + 0.05)
    self.assertGreater(entropies[1], entropies[2] + 0.05)
    iid = mean_entropy(iid=True)
    self.assertGreater(iid, entropies[0] + 1.0)
    # IID clients share the population's label distribution.
    g = _gen(num_clients=300, iid=True)
    pooled = np.concatenate([g.held_out(k, 200)[1] for k in range(300)])
    self.assertLess(abs(iid - _label_entropy(pooled)), 0.1)

  def test_iid_clients_share_one_model_and_ignore_alpha_beta(self):
    a = _gen(iid=True, alpha=0.0, beta=0.0)
    b = _gen(iid=True, alpha=5.0, beta=5.0)
    m0, m1 = a.client_model(0), a.client_model(150)
    np.testing.assert_array_equal(m0.weights, m1.weights)
    np.testing.assert_array_equal(m0.mean, np.zeros(synthetic.DIM))
    np.testing.assert_array_equal(a.client(9)[0], b.client(9)[0])
    np.testing.assert_array_equal(a.client(9)[1], b.client(9)[1])

  @parameterized.named_parameters(('fedprox', 'fedprox'), ('leaf', 'leaf'))
  def test_size_law(self, name):
    # n = min(floor(L) + offset, cap), L ~ LogNormal(mu, sigma):
    # P(n <= offset + t) = Phi((ln(t + 1) - mu) / sigma) for t < cap - offset.
    law = synthetic.SIZE_LAWS[name]
    sizes = _gen(num_clients=40000, law=law).sizes
    self.assertGreaterEqual(sizes.min(), law.offset)
    for t in (5, 20, 54, 150, 400):
      expected = _normal_cdf((math.log(t + 1) - law.mu) / law.sigma)
      # Binomial standard error <= 0.0025; 4 of them.
      self.assertAlmostEqual(np.mean(sizes <= law.offset + t), expected,
                             delta=0.01, msg=f't={t}')
    if law.cap is None:
      self.assertGreater(sizes.max(), 10000)  # heavy tail
    else:
      self.assertEqual(sizes.max(), law.cap)
      capped = 1 - _normal_cdf(
          (math.log(law.cap - law.offset) - law.mu) / law.sigma)
      self.assertAlmostEqual(np.mean(sizes == law.cap), capped, delta=0.006)

  def test_test_split(self):
    g = _gen(num_clients=1000, law=FEDPROX)
    x, y, clients = g.test_split()
    n = synthetic.TEST_DRAWS * synthetic.TEST_EXAMPLES_PER_DRAW
    self.assertEqual(x.shape, (n, synthetic.DIM))
    self.assertEqual(y.shape, (n,))
    self.assertEqual(clients.shape, (n,))
    self.assertTrue(np.all(np.diff(clients) >= 0))
    # Each client contributes whole draws of TEST_EXAMPLES_PER_DRAW rows.
    _, per_client = np.unique(clients, return_counts=True)
    np.testing.assert_array_equal(
        per_client % synthetic.TEST_EXAMPLES_PER_DRAW, 0)
    # Clients are drawn in proportion to their size: under a heavy-tailed
    # law a test example's client is far bigger than the median client.
    self.assertGreater(np.median(g.sizes[clients]), 5 * np.median(g.sizes))
    # Every client's rows are its held-out examples.
    for k in (clients[0], clients[-1]):
      rows = clients == k
      held_x, held_y = g.held_out(k, int(rows.sum()))
      np.testing.assert_array_equal(x[rows], held_x)
      np.testing.assert_array_equal(y[rows], held_y)
    np.testing.assert_array_equal(g.test_split()[0], x)

  @parameterized.named_parameters(
      ('clients', dict(num_clients=0), r'num_clients=0 must be an integer'),
      ('clients_bool', dict(num_clients=True), r'num_clients=True'),
      ('alpha', dict(alpha=-1.0), r'synthetic_alpha=-1.0 must be a finite'),
      ('beta', dict(beta=float('nan')), r'synthetic_beta=nan must be'),
      ('seed', dict(seed=-3), r'seed=-3 must be an integer >= 0'),
  )
  def test_invalid_arguments(self, overrides, message):
    with self.assertRaisesRegex(DataError, message):
      _gen(**overrides)

  def test_index_out_of_range(self):
    with self.assertRaisesRegex(DataError, r'client index 200 is outside '
                                r'0..199'):
      _gen().client(200)


class RegistryTest(parameterized.TestCase):

  def test_config_keys_and_their_rules(self):
    config = config_lib.default_config()
    config.data.name = 'synthetic'
    got = config_lib.settings(config_lib.validate(config)).data
    self.assertEqual((got.synthetic_alpha, got.synthetic_beta,
                      got.synthetic_sizes), (1.0, 1.0, 'leaf'))
    for key, value, message in [
        ('synthetic_sizes', 'zipf',
         r"^config key 'data.synthetic_sizes' is 'zipf'; allowed: fedprox, "
         r'leaf$'),
        ('synthetic_alpha', -0.5,
         r"^config key 'data.synthetic_alpha' is -0.5; allowed: \[0.0, inf\]$"),
        ('synthetic_beta', -1.0,
         r"^config key 'data.synthetic_beta' is -1.0; allowed: \[0.0, inf\]$")]:
      bad = config_lib.default_config()
      bad.data.name = 'synthetic'
      bad.data[key] = value
      with self.subTest(key=key), self.assertRaisesRegex(
          config_lib.ConfigError, message):
        config_lib.validate(bad)

  def test_builds_from_config(self):
    data = registry.build_federated_data(_cfg(), seed=3)
    self.assertEqual(data.name, 'synthetic')
    self.assertEqual(data.input_shape, (synthetic.DIM,))
    self.assertEqual(data.num_classes, synthetic.NUM_CLASSES)
    self.assertIsNone(data.value_range)
    self.assertLen(data.client_ids, 1000)
    self.assertEqual(data.client_ids[0], 'client_0000')
    x, y = data.client_arrays('client_0123')
    self.assertEqual(len(y), data.client_size('client_0123'))
    self.assertEqual(len(data.test_y),
                     synthetic.TEST_DRAWS * synthetic.TEST_EXAMPLES_PER_DRAW)
    again = registry.build_federated_data(_cfg(), seed=3)
    np.testing.assert_array_equal(again.client_arrays('client_0123')[0], x)
    np.testing.assert_array_equal(again.sizes(), data.sizes())
    other = registry.build_federated_data(_cfg(), seed=4)
    self.assertFalse(np.array_equal(other.sizes(), data.sizes()))

  def test_iid_name_ignores_alpha_and_beta(self):
    a = registry.build_federated_data(
        _cfg(name='synthetic_iid', synthetic_alpha=0.0), seed=0)
    b = registry.build_federated_data(
        _cfg(name='synthetic_iid', synthetic_alpha=9.0, synthetic_beta=9.0),
        seed=0)
    self.assertEqual(a.name, 'synthetic_iid')
    np.testing.assert_array_equal(a.client_arrays('client_0005')[0],
                                  b.client_arrays('client_0005')[0])
    np.testing.assert_array_equal(a.test_y, b.test_y)

  def test_size_law_from_config(self):
    data = registry.build_federated_data(_cfg(synthetic_sizes='leaf'), seed=0)
    self.assertLessEqual(data.sizes().max(), 1000)
    self.assertGreaterEqual(data.sizes().min(), 5)

  @parameterized.named_parameters(
      ('law', dict(synthetic_sizes='zipf'),
       r"data.synthetic_sizes='zipf' is not one of \['fedprox', 'leaf'\]"),
      ('alpha', dict(synthetic_alpha=-0.5), r'synthetic_alpha=-0.5'),
      ('clients', dict(num_clients=0), r'num_clients=0'),
  )
  def test_invalid_config(self, overrides, message):
    with self.assertRaisesRegex(DataError, message):
      registry.build_federated_data(_cfg(**overrides), seed=0)

  def test_missing_field(self):
    cfg = ml_collections.ConfigDict(dict(name='synthetic', num_clients=10,
                                         synthetic_sizes='leaf'))
    with self.assertRaisesRegex(DataError, r"no field 'synthetic_alpha'"):
      registry.build_federated_data(cfg, seed=0)

  def test_clients_are_regenerated_not_cached(self):
    data = registry.build_federated_data(_cfg(num_clients=50), seed=0)
    first = data.client_arrays('client_0007')
    second = data.client_arrays('client_0007')
    self.assertIsNot(first[0], second[0])
    np.testing.assert_array_equal(first[0], second[0])


class ScaleTest(absltest.TestCase):
  """100,000 clients: built in O(N) integers, a round in O(its data)."""

  def test_a_round_of_1000_clients_out_of_100000(self):
    # The whole data set would be ~47 M examples x 244 bytes = ~11 GB.
    # Generous bounds: tens of seconds and a few hundred MB, on a shared
    # 2-core machine under tracemalloc (typical: 0.2 s to build, 0.5 s for
    # the round alone; 9-17 s to build seen under load). The memory bounds
    # are what rule out materialising the data set.
    tracemalloc.start()
    try:
      t0 = time.perf_counter()
      data = registry.build_federated_data(_cfg(num_clients=100_000), seed=0)
      build_seconds = time.perf_counter() - t0
      _, build_peak = tracemalloc.get_traced_memory()
      sizes = data.sizes()
      self.assertGreater(int(sizes.sum()), 20_000_000)
      picked = np.random.default_rng(1).choice(100_000, 1000, replace=False)
      tracemalloc.reset_peak()
      t0 = time.perf_counter()
      examples = 0
      for i in picked:
        x, y = data.client_arrays(data.client_ids[i])
        examples += len(y)
        self.assertEqual(x.shape, (sizes[i], synthetic.DIM))
      round_seconds = time.perf_counter() - t0
      after_round, round_peak = tracemalloc.get_traced_memory()
    finally:
      tracemalloc.stop()
    self.assertEqual(examples, int(sizes[picked].sum()))
    self.assertLess(build_seconds, 30.0)
    self.assertLess(round_seconds, 30.0)
    self.assertLess(build_peak, 200e6)
    # One client at a time is alive: the round's peak is about the largest
    # client's arrays (float32 features, their float64 copy for the logits:
    # 720 bytes per example), not the round's total.
    largest = int(sizes[picked].max())
    self.assertLess(round_peak, 50e6 + largest * synthetic.DIM * 16)
    self.assertLess(after_round, build_peak + 10e6)  # nothing kept


if __name__ == '__main__':
  absltest.main()
