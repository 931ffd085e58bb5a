"""One contract, run on every stage and every chain the config can build."""

import itertools
import math

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.runtime import local as local_runtime
from tff_compress.encoders import chain as chain_lib
from tff_compress.encoders import factory
from tff_compress.encoders import stages

_N = 1000


def _x(n=_N, seed=0):
  rng = np.random.default_rng(seed)
  # Heavy-tailed like real weights/updates: a few large outliers.
  v = rng.normal(size=n) * 0.05
  v[rng.choice(n, 5, replace=False)] = rng.normal(size=5)
  return tf.constant(v.astype(np.float32))


def _seed(i):
  return tf.constant([i, 17], tf.int64)


# Every single stage (quantize needs bitpack after it to be sendable, but as a
# stage it is tested on its own too) and every factory chain.
_STAGES = {
    'hadamard': [stages.HadamardStage()],
    'hadamard_chunk256': [stages.HadamardStage(chunk_size=256)],
    'kashin': [stages.KashinStage()],
    'kashin_ratio2': [stages.KashinStage(frame_ratio=2.0, frame_size=512)],
    'subsample': [stages.SubsampleStage(0.3)],
    'quantize1': [stages.QuantizeStage(1)],
    'quantize3': [stages.QuantizeStage(3)],
    'quantize16': [stages.QuantizeStage(16)],
    'quantize_bitpack2': [stages.QuantizeStage(2), stages.BitpackStage(2)],
    'quantize_bitpack5': [stages.QuantizeStage(5), stages.BitpackStage(5)],
    'quantize_bitpack16': [stages.QuantizeStage(16), stages.BitpackStage(16)],
}
_CHAINS = {
    f'{t}_b{b}_s{s}': factory.build_chain(t, s, b, 'test')
    for t, b, s in itertools.product(('none', 'hadamard', 'kashin'),
                                     (1, 2, 4, 8, 16, 32), (1.0, 0.5))
}
_ALL = dict({k: chain_lib.Chain(v) for k, v in _STAGES.items()}, **_CHAINS)
_CASES = [(k, k) for k in sorted(_ALL)]


def _is_lossless(chain):
  return not any(isinstance(s, (stages.QuantizeStage, stages.SubsampleStage))
                 for s in chain.stages)


def _tff_round_trip(chain):

  @tff.tensorflow.computation(tff.TensorType(np.float32, [_N]),
                              tff.TensorType(np.int64, [2]))
  def round_trip(x, seed):
    return chain.decode(chain.encode(x, seed), [_N], seed)

  return round_trip


class ContractTest(parameterized.TestCase):

  @parameterized.named_parameters(*_CASES)
  def test_round_trip_shape_dtype_determinism(self, name):
    chain = _ALL[name]
    x = tf.reshape(_x(), [10, 100])
    enc = chain.encode(x, _seed(1))
    spec = chain.spec(_N)
    self.assertEqual(list(enc), list(spec))
    for key, (dtype, count) in spec.items():
      self.assertEqual(enc[key].dtype.as_numpy_dtype, dtype, key)
      self.assertEqual(int(tf.size(enc[key])), count, key)
    dec = chain.decode(enc, [10, 100], _seed(1))
    self.assertEqual(dec.shape, (10, 100))
    self.assertEqual(dec.dtype, tf.float32)
    again = chain.encode(x, _seed(1))
    for key in enc:
      np.testing.assert_array_equal(enc[key], again[key])
    if _is_lossless(chain):
      np.testing.assert_allclose(dec, x, atol=2e-5)
    elif chain.stages[0].name != 'quantize' or chain.stages[0].bits < 16:
      other = chain.encode(x, _seed(2))
      self.assertFalse(np.array_equal(enc['values'], other['values']))

  @parameterized.named_parameters(*_CASES)
  def test_unbiased_and_variance_bound(self, name):
    chain = _ALL[name]
    x = _x(400, seed=3)
    reps = 300

    @tf.function
    def round_trip(seed):
      return chain.decode(chain.encode(x, seed), [400], seed)

    decs = np.stack([round_trip(_seed(i)).numpy() for i in range(reps)])
    err = decs - x.numpy()
    # Unbiasedness: the mean error is within 5 standard errors (plus float
    # round-off) for all but a handful of 400 coordinates. A coordinate that
    # rounds up with probability p < ~1/reps may never move in `reps` draws
    # and then has a sample SE of 0 although it is unbiased (with 8-bit
    # quantization of this x a perfect RNG failed the bare 5-SE test in 36 %
    # of trials), so the SE is floored at the largest per-coordinate spread
    # / reps, the rule-of-three resolution of `reps` draws. A quantizer that
    # under-rounds by 10 % still fails this test at 4-8 bits.
    spread = (err.max(axis=0) - err.min(axis=0)).max()
    se = np.sqrt((err.std(axis=0) / math.sqrt(reps))**2 +
                 (spread / reps)**2)
    outside = np.abs(err.mean(axis=0)) > 5 * se + 1e-5
    self.assertLessEqual(outside.sum(), 2)
    # Variance bound of the quantizer on its actual input range.
    q = [s for s in chain.stages if isinstance(s, stages.QuantizeStage)]
    if q and len(chain.stages) == len(q) + sum(
        isinstance(s, stages.BitpackStage) for s in chain.stages):
      span = float(tf.reduce_max(x) - tf.reduce_min(x))
      bound = (span / q[0].levels) ** 2 / 4
      self.assertLessEqual(err.var(axis=0).max(), bound * 1.3 + 1e-12)
    if len(chain.stages) == 1 and isinstance(chain.stages[0],
                                             stages.SubsampleStage):
      s = chain.stages[0]
      k = s.output_length(400)
      expected = x.numpy() ** 2 * (400 / k - 1)
      np.testing.assert_allclose(err.var(axis=0).mean(), expected.mean(),
                                 rtol=0.2)

  @parameterized.named_parameters(*_CASES)
  def test_commutes_with_sum_is_truthful(self, name):
    chain = _ALL[name]
    a, b = _x(seed=4), _x(seed=5)
    s = _seed(9)
    ea, eb = chain.encode(a, s), chain.encode(b, s)
    summed = {k: ea[k] + eb[k] for k in ea if ea[k].dtype == tf.float32}
    if chain.commutes_with_sum:
      self.assertTrue(all(k in summed for k in ea))
      np.testing.assert_allclose(
          chain.decode(summed, [_N], s),
          chain.decode(ea, [_N], s) + chain.decode(eb, [_N], s), atol=1e-4)
    else:
      self.assertTrue(any(isinstance(st, (stages.QuantizeStage,
                                          stages.BitpackStage))
                          for st in chain.stages))

  def test_every_chain_runs_in_tff(self):
    x = _x()
    with local_runtime.local_context():
      for name, chain in sorted(_ALL.items()):
        round_trip = _tff_round_trip(chain)
        eager = chain.decode(chain.encode(x, _seed(3)), [_N], _seed(3))
        in_tff = round_trip(x.numpy(), np.array([3, 17], np.int64))
        # Graph and eager kernels may round the last float bit differently,
        # which can flip a stochastic-rounding decision on a rare coordinate.
        off = np.abs(in_tff - eager.numpy()) > 1e-5
        self.assertLessEqual(off.mean(), 0.002, name)


class StageMathTest(parameterized.TestCase):

  def test_fwht_is_orthonormal_and_matches_dense_hadamard(self):
    x = tf.random.stateless_normal([3, 64], [1, 1])
    h = np.array([[1.0]])
    while h.shape[0] < 64:
      h = np.block([[h, h], [h, -h]])
    h /= 8.0
    np.testing.assert_allclose(stages.fwht(x), x.numpy() @ h, atol=1e-5)
    np.testing.assert_allclose(stages.fwht(stages.fwht(x)), x, atol=1e-5)
    np.testing.assert_allclose(tf.norm(stages.fwht(x), axis=1),
                               tf.norm(x, axis=1), rtol=1e-5)

  def test_fwht_matches_tfmot(self):
    # pylint: disable=g-import-not-at-top
    from tensorflow_model_optimization.python.core.internal.tensor_encoding.utils import tf_utils
    # pylint: enable=g-import-not-at-top
    x = tf.random.stateless_normal([2, 256], [2, 3])
    np.testing.assert_allclose(stages.fwht(x),
                               tf_utils.fast_walsh_hadamard_transform(x),
                               atol=1e-5)

  def test_kashin_coefficients_are_flat(self):
    x = _x(2000, seed=7)  # heavy-tailed
    kashin = stages.KashinStage(frame_ratio=2.0, iterations=6,
                                frame_size=4096)
    hadamard = stages.HadamardStage()

    def linf_ratio(c):  # l_inf in units of ||x|| / sqrt(N)
      return float(tf.reduce_max(tf.abs(c)) * math.sqrt(int(tf.size(c))) /
                   tf.norm(x))

    # Clipped rounds add at most L_0 (1 + eta + ...) with L_0 = sqrt(ratio)
    # in these units; the final unclipped round adds the small residual.
    bound = math.sqrt(2.0) * sum(0.9**i for i in range(5)) + 1.0
    k_ratios, h_ratios = [], []
    for i in range(8):
      c_k = kashin.encode(x, _seed(i))['values']
      k_ratios.append(linf_ratio(c_k))
      h_ratios.append(linf_ratio(hadamard.encode(x, _seed(i))['values']))
      np.testing.assert_allclose(  # the representation is exact
          kashin.decode({'values': c_k}, 2000, _seed(i)), x, atol=1e-5)
    # Kashin's l_inf is bounded for every seed and, typically, clearly
    # smaller than the rotated vector's (one draw of each can overlap).
    self.assertLess(max(k_ratios), bound)
    self.assertLess(np.median(k_ratios), 0.9 * np.median(h_ratios))

  def test_kashin_frame_has_no_repeated_blocks(self):
    # Regression: one randomized Hadamard over an end-padded chunk repeats
    # the coefficients in blocks (exact duplicates when c <= F/2).
    kashin = stages.KashinStage(frame_ratio=2.0, frame_size=1024)
    x = _x(512, seed=8)
    a = kashin.encode(x, _seed(2))['values'].numpy()
    self.assertGreater(np.abs(a[:512] - a[512:]).max(),
                       0.5 * np.abs(a).max())

  def test_payload_bytes_are_the_packing(self):
    chain = factory.build_chain('none', 1.0, 2, 'test')
    enc = chain.encode(_x(), _seed(0))
    # 1000 codes x 2 bits = 250 bytes + float32 min and max.
    self.assertEqual(int(chain_lib.payload_bytes(enc)), 250 + 8)
    chain = factory.build_chain('none', 0.5, 3, 'test')
    enc = chain.encode(_x(), _seed(0))
    self.assertEqual(int(chain_lib.payload_bytes(enc)),
                     math.ceil(500 * 3 / 8) + 8)

  def test_constant_tensor_quantizes_exactly(self):
    chain = factory.build_chain('none', 1.0, 1, 'test')
    x = tf.fill([100], 0.25)
    dec = chain.decode(chain.encode(x, _seed(0)), [100], _seed(0))
    np.testing.assert_array_equal(dec, x)

  def test_hadamard_padding_stays_small(self):
    h = stages.HadamardStage()
    for n in (5000, 1_605_632, 51_200, 3_000):
      self.assertLessEqual(h.output_length(n) - n, max(n / 32, 256))


if __name__ == '__main__':
  absltest.main()
