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
from tff_compress.encoders import eden
from tff_compress.encoders import factory
from tff_compress.encoders import lloyd_max
from tff_compress.encoders import rotation
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


# Every single stage (quantizers need bitpack after them to be sendable, but
# as stages they are tested on their own too) and every factory chain.
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
    'rotation2': [rotation.RotationStage(layers=2)],
    'rotation3': [rotation.RotationStage(layers=3)],
    'rotation_keep03': [rotation.RotationStage(keep=0.3)],
    'rotation_keep03_mse': [rotation.RotationStage(keep=0.3, unbiased=False)],
    'eden1': [eden.EdenStage(1)],
    'eden3_mse': [eden.EdenStage(3, scale='mse')],
    'eden_bitpack2': [eden.EdenStage(2), stages.BitpackStage(2)],
    'eden_bitpack1_5': [eden.EdenStage(1.5), stages.BitpackStage(1.5)],
    'eden_bitpack5': [eden.EdenStage(5), stages.BitpackStage(5)],
    'eden_bitpack8_mse': [eden.EdenStage(8, scale='mse'),
                          stages.BitpackStage(8)],
    'rotation_eden4': [rotation.RotationStage(), eden.EdenStage(4),
                       stages.BitpackStage(4)],
}
_CHAINS = {
    f'{t}_b{b}_s{s}': factory.build_chain(t, s, b, 'test')
    for t, b, s in itertools.product(('none', 'hadamard', 'kashin'),
                                     (1, 2, 4, 8, 16, 32), (1.0, 0.5))
}
_CHAINS.update({
    f'rotation_b{b}_s{s}': factory.build_chain('rotation', s, b, 'test')
    for b, s in itertools.product((1, 4, 16, 32), (1.0, 0.5))
})
# EDEN after every transform; after the rotation at integer, fractional
# and sub-bit rates with both scales.
_EDEN = {
    'none_eden2_s1.0': ('none', 1.0, 2, 'unbiased'),
    'hadamard_eden2_s0.5': ('hadamard', 0.5, 2, 'unbiased'),
    'kashin_eden2_s1.0': ('kashin', 1.0, 2, 'unbiased'),
    'rotation_eden1_s1.0': ('rotation', 1.0, 1, 'unbiased'),
    'rotation_eden2.62_s1.0': ('rotation', 1.0, 2.62, 'unbiased'),
    'rotation_eden4_s1.0': ('rotation', 1.0, 4, 'unbiased'),
    'rotation_eden1_s0.25': ('rotation', 0.25, 1, 'unbiased'),
    'rotation_eden3_s0.5': ('rotation', 0.5, 3, 'unbiased'),
    'rotation_eden1_s1.0_mse': ('rotation', 1.0, 1, 'mse'),
    'rotation_eden2_s1.0_mse': ('rotation', 1.0, 2, 'mse'),
    'rotation_eden8_s1.0_mse': ('rotation', 1.0, 8, 'mse'),
    'rotation_eden1.5_s0.5_mse': ('rotation', 0.5, 1.5, 'mse'),
}
_CHAINS.update({
    name: factory.build_chain(t, s, b, 'test', quantizer='eden', scale=scale)
    for name, (t, s, b, scale) in _EDEN.items()
})
_ALL = dict({k: chain_lib.Chain(v) for k, v in _STAGES.items()}, **_CHAINS)
_CASES = [(k, k) for k in sorted(_ALL)]


def _is_lossless(chain):
  """No stage drops or rounds information (transforms and packing only)."""
  for s in chain.stages:
    if isinstance(s, rotation.RotationStage):
      if s.keep < 1.0:
        return False
    elif not isinstance(s, (stages.HadamardStage, stages.KashinStage,
                            stages.BitpackStage)):
      return False
  return True


def _uses_seed(chain):
  """The encoding depends on the seed (EDEN and packing are deterministic;
  16-bit stochastic rounding of a range this small rarely differs)."""
  return any(s.name in ('hadamard', 'kashin', 'rotation', 'subsample') or (
      s.name == 'quantize' and s.bits < 16) for s in chain.stages)


def _rotation_eden_vnmse(chain, n):
  """Expected vNMSE of [rotation(keep), eden] with Gaussian coordinates.

  A rate segment of b bits has error D_b ||y_seg||^2 with the minimum-error
  scale and D_b / (1 - D_b) ||y_seg||^2 with the unbiased one (`eden.py`).
  Keeping a fraction f of the rotated coordinates adds (1/f - 1) ||x||^2
  and multiplies the quantization error by 1/f when unbiased; without
  rescaling it adds (1 - f) ||x||^2 (the dropped energy).
  """
  rot, quant = chain.stages[0], chain.stages[1]
  c, w = rotation.geometry(n)
  f = rot.output_length(n) / (c * w)
  m = rot.output_length(n)
  q = 0.0
  for k, b in stages.rate_segments(m, quant.bits):
    d = lloyd_max.gaussian_table(b).mse
    q += k / m * (d / (1 - d) if quant.scale == 'unbiased' else d)
  if quant.scale == 'unbiased':
    return (1 + q) / f - 1
  return (1 - f) + f * q


def _round_trips(chains):
  """x, seed -> [decode(encode(x)) for each chain], as a plain function."""

  def round_trips(x, seed):
    return [c.decode(c.encode(x, seed), [_N], seed) for c in chains]

  return round_trips


def _decodes(chain, x, seeds):
  """[len(seeds), n] decodes of x, one per seed (int64 [2] each)."""
  n = int(x.shape[0])

  @tf.function
  def run(seeds):
    return tf.map_fn(lambda s: chain.decode(chain.encode(x, s), [n], s),
                     seeds, fn_output_signature=tf.float32)

  return run(tf.constant(seeds, tf.int64)).numpy()


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
    if _uses_seed(chain):
      other = chain.encode(x, _seed(2))
      self.assertFalse(np.array_equal(enc['values'], other['values']))

  @parameterized.named_parameters(*_CASES)
  def test_unbiased_and_variance_bound(self, name):
    chain = _ALL[name]
    x = _x(400, seed=3)
    reps = 300
    decs = _decodes(chain, x, [[i, 17] for i in range(reps)])
    err = decs - x.numpy()
    if chain.unbiased:
      # The mean error is within 5 standard errors (plus float round-off)
      # for all but a handful of 400 coordinates. A coordinate that rounds
      # up with probability p < ~1/reps may never move in `reps` draws and
      # then has a sample SE of 0 although it is unbiased (with 8-bit
      # quantization of this x a perfect RNG failed the bare 5-SE test in
      # 36 % of trials), so the SE is floored at the largest
      # per-coordinate spread / reps, the rule-of-three resolution of
      # `reps` draws. A quantizer that under-rounds by 10 % still fails this
      # test at 4-8 bits.
      spread = (err.max(axis=0) - err.min(axis=0)).max()
      se = np.sqrt((err.std(axis=0) / math.sqrt(reps))**2 +
                   (spread / reps)**2)
      outside = np.abs(err.mean(axis=0)) > 5 * se + 1e-5
      self.assertLessEqual(outside.sum(), 2)
    # Variance bound of the quantizer on its actual input range.
    if [s.name for s in chain.stages][:1] == ['quantize'] and all(
        s.name in ('quantize', 'bitpack') for s in chain.stages):
      span = float(tf.reduce_max(x) - tf.reduce_min(x))
      bound = (span / chain.stages[0].levels) ** 2 / 4
      self.assertLessEqual(err.var(axis=0).max(), bound * 1.3 + 1e-12)
    if len(chain.stages) == 1 and isinstance(chain.stages[0],
                                             stages.SubsampleStage):
      s = chain.stages[0]
      k = s.output_length(400)
      expected = x.numpy() ** 2 * (400 / k - 1)
      np.testing.assert_allclose(err.var(axis=0).mean(), expected.mean(),
                                 rtol=0.2)
    names = [s.name for s in chain.stages]
    if names[:2] == ['rotation', 'eden']:
      # The error is at most EDEN's Gaussian theory even on this heavy-tailed
      # x; with 3 layers the coordinates are Gaussian and it matches. (Two
      # layers leave flatter, more two-point-like coordinates, which the
      # 1-bit quantizer gets more right.)
      vnmse = (err**2).sum(axis=1).mean() / float(tf.reduce_sum(x * x))
      ratio = vnmse / _rotation_eden_vnmse(chain, 400)
      self.assertLess(ratio, 1.15)
      if chain.stages[0].haar_like:
        self.assertGreater(ratio, 0.85)
    if names == ['rotation'] and chain.stages[0].keep < 1:
      rot = chain.stages[0]
      c, w = rotation.geometry(400)
      f = rot.output_length(400) / (c * w)
      vnmse = (err**2).sum(axis=1).mean() / float(tf.reduce_sum(x * x))
      self.assertBetween(
          vnmse / ((1 / f - 1) if rot.unbiased else (1 - f)), 0.85, 1.15)

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
      # Only quantizers and packing emit integer codes, which do not add.
      self.assertTrue(any(k not in summed for k in ea))

  @parameterized.named_parameters(*_CASES)
  def test_homogeneous_is_truthful(self, name):
    chain = _ALL[name]
    self.assertTrue(chain.homogeneous)
    enc = chain.encode(_x(), _seed(6))
    scaled = {k: v * 2.5 if v.dtype == tf.float32 else v
              for k, v in enc.items()}
    want = 2.5 * chain.decode(enc, [_N], _seed(6)).numpy()
    # Float rounding of min + code (max - min) / L cancels near 0.
    np.testing.assert_allclose(
        chain.decode(scaled, [_N], _seed(6)), want, rtol=1e-5,
        atol=1e-5 * np.abs(want).max())

  def test_every_chain_runs_in_tff(self):
    # One computation holding every chain: TFF's per-computation overhead
    # (serialisation, the C++ worker's set-up) is paid once.
    names = sorted(_ALL)
    round_trips = _round_trips([_ALL[k] for k in names])
    x, seed = _x(), np.array([3, 17], np.int64)
    in_tf = tf.function(round_trips)(x, tf.constant(seed))
    with local_runtime.local_context():
      in_tff = tff.tensorflow.computation(
          round_trips, tff.TensorType(np.float32, [_N]),
          tff.TensorType(np.int64, [2]))(x.numpy(), seed)
    self.assertLen(in_tff, len(names))
    for name, want, got in zip(names, in_tf, in_tff):
      # Kernels may round the last float bit differently in the C++
      # runtime, which can flip a rounding decision on a rare coordinate.
      off = np.abs(got - want.numpy()) > 1e-5
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
    # EDEN: the codes and one float32 scale per rate segment; 1.5 bits =
    # 500 codes of 2 bits + 500 of 1 bit.
    chain = factory.build_chain('rotation', 1.0, 1.5, 'test',
                                quantizer='eden')
    enc = chain.encode(_x(), _seed(0))
    # (1000 are padded to 32 x 32 rotated coordinates.)
    self.assertEqual(int(chain_lib.payload_bytes(enc)), 128 + 64 + 8)
    # Sub-bit: 1 bit on a quarter of the 32 x 32 rotated coordinates.
    chain = factory.build_chain('rotation', 0.25, 1, 'test',
                                quantizer='eden')
    enc = chain.encode(_x(), _seed(0))
    self.assertEqual(int(chain_lib.payload_bytes(enc)), 32 * 8 // 8 + 4)

  def test_constant_tensor_quantizes_exactly(self):
    chain = factory.build_chain('none', 1.0, 1, 'test')
    x = tf.fill([100], 0.25)
    dec = chain.decode(chain.encode(x, _seed(0)), [100], _seed(0))
    np.testing.assert_array_equal(dec, x)

  @parameterized.parameters('unbiased', 'mse')
  def test_zero_tensor_decodes_to_zero(self, scale):
    chain = factory.build_chain('rotation', 1.0, 4, 'test', quantizer='eden',
                                scale=scale)
    enc = chain.encode(tf.zeros([300]), _seed(0))
    self.assertEqual(float(enc['eden/scale'][0]), 0.0)
    np.testing.assert_array_equal(chain.decode(enc, [300], _seed(0)),
                                  np.zeros(300))

  def test_hadamard_padding_stays_small(self):
    h = stages.HadamardStage()
    for n in (5000, 1_605_632, 51_200, 3_000):
      self.assertLessEqual(h.output_length(n) - n, max(n / 32, 256))

  def test_bitpack_round_trips_every_width_and_rate(self):
    rng = np.random.default_rng(0)
    for bits in stages.PACK_BITS + (1.25, 2.62, 7.5):
      stage = stages.BitpackStage(bits)
      for n in (1, 7, 9, 1001):
        segments = stages.rate_segments(n, bits)
        codes = np.concatenate([rng.integers(0, 1 << b, k)
                                for k, b in segments]).astype(np.int32)
        packed = stage.encode(tf.constant(codes), None)['values']
        self.assertEqual(int(tf.size(packed)), stage.output_length(n))
        self.assertEqual(stage.output_length(n),
                         sum(-(-k * b // 8) for k, b in segments))
        np.testing.assert_array_equal(
            stage.decode({'values': packed}, n, None), codes)

  def test_bitpack_layout_is_least_significant_bit_first(self):
    # The wire format: code j holds bits [b j, b j + b) of the stream.
    rng = np.random.default_rng(1)
    for bits in stages.PACK_BITS:
      codes = rng.integers(0, 1 << bits, 37)
      stream = np.concatenate([[(c >> i) & 1 for i in range(bits)]
                               for c in codes])
      stream = np.pad(stream, (0, -len(stream) % 8)).reshape(-1, 8)
      want = (stream * (1 << np.arange(8))).sum(axis=1)
      got = stages.BitpackStage(bits).encode(
          tf.constant(codes, tf.int32), None)['values']
      np.testing.assert_array_equal(got, want)

  def test_rate_segments(self):
    self.assertEqual(stages.rate_segments(1000, 3), [(1000, 3)])
    self.assertEqual(stages.rate_segments(1000, 2.25), [(250, 3), (750, 2)])
    self.assertEqual(stages.rate_segments(3, 1.1), [(3, 1)])
    for bad in (0.5, 8.5, 9, True, '2'):
      with self.assertRaisesRegex(stages.CodecError, 'bitpack bits'):
        stages.BitpackStage(bad)


class LloydMaxTest(parameterized.TestCase):

  def test_one_bit_is_the_half_normal_mean(self):
    table = lloyd_max.gaussian_table(1)
    np.testing.assert_allclose(table.centroids,
                               [-math.sqrt(2 / math.pi),
                                math.sqrt(2 / math.pi)], rtol=1e-14)
    np.testing.assert_array_equal(table.boundaries, [0.0])
    self.assertAlmostEqual(table.mse, 1 - 2 / math.pi, places=14)

  def test_matches_max_1960(self):
    # Max (1960), Table I: output levels and mean squared error.
    np.testing.assert_allclose(lloyd_max.gaussian_table(2).centroids[2:],
                               [0.4528, 1.510], atol=1e-3)
    np.testing.assert_allclose(lloyd_max.gaussian_table(3).centroids[4:],
                               [0.2451, 0.7560, 1.344, 2.152], atol=1e-3)
    np.testing.assert_allclose(
        [lloyd_max.gaussian_table(b).mse for b in (2, 3, 4, 5)],
        [0.1175, 0.03454, 0.009497, 0.002499], rtol=3e-3)

  @parameterized.parameters(1, 2, 3, 4, 5, 6, 7, 8)
  def test_optimality_conditions(self, bits):
    table = lloyd_max.gaussian_table(bits)
    c, t = table.centroids, table.boundaries
    self.assertLen(c, 2**bits)
    np.testing.assert_array_equal(c, -c[::-1])  # symmetric
    self.assertTrue(np.all(np.diff(c) > 0))
    np.testing.assert_allclose(t, (c[:-1] + c[1:]) / 2, atol=1e-15)
    # Centroid condition against an independent numeric integration.
    grid = np.linspace(-12, 12, 2_400_001)
    pdf = np.exp(-grid**2 / 2) / math.sqrt(2 * math.pi)
    cell = np.searchsorted(t, grid, side='right')
    mass = np.bincount(cell, weights=pdf, minlength=len(c))
    mean = np.bincount(cell, weights=pdf * grid, minlength=len(c)) / mass
    np.testing.assert_allclose(mean, c, atol=2e-5 * c[-1])
    mse = np.sum(pdf * (grid - c[cell])**2) * (grid[1] - grid[0])
    self.assertAlmostEqual(table.mse / mse, 1.0, places=4)
    # Each extra bit divides the error by about 4 (6 dB per bit).
    if bits > 1:
      self.assertBetween(lloyd_max.gaussian_table(bits - 1).mse / table.mse,
                         3.0, 4.1)

  def test_bad_bits(self):
    for bad in (0, 9, 2.5, True):
      with self.assertRaisesRegex(ValueError, 'Lloyd-Max bits'):
        lloyd_max.gaussian_table(bad)


class EdenTest(parameterized.TestCase):

  @parameterized.parameters(1, 2, 3, 4, 5, 8)
  def test_codes_count_the_boundaries_below(self, bits):
    rng = np.random.default_rng(bits)
    sigma = np.float32(0.37)
    scaled = (sigma * lloyd_max.gaussian_table(bits).boundaries.astype(
        np.float32)).astype(np.float32)
    # Random values plus the scaled boundaries and their float neighbours
    # (the lookup table must get those exactly right too).
    y = np.concatenate([
        rng.normal(size=20_000).astype(np.float32) * sigma * 2, scaled,
        np.nextafter(scaled, np.float32(-np.inf)),
        np.nextafter(scaled, np.float32(np.inf)),
        [-1e30, 1e30]]).astype(np.float32)
    y = y[np.abs(y) > 1e-30]  # TF flushes subnormals to zero
    want = np.sum(y[:, None] >= scaled[None, :], axis=1)
    got = eden.codes_of(tf.constant(y), tf.constant(sigma), bits)
    np.testing.assert_array_equal(got, want)

  @parameterized.parameters(1, 2.5, 4)
  def test_unbiased_scale_keeps_the_projection(self, bits):
    # <S q, y> = ||y||^2 for every y and rate segment: the decode's
    # component along y is exactly y.
    stage = eden.EdenStage(bits)
    for i in range(3):
      y = (tf.random.stateless_normal([999], [i, 4]) ** 3).numpy()
      dec = stage.decode(stage.encode(tf.constant(y), None), 999,
                         None).numpy()
      start = 0
      for k, _ in stages.rate_segments(999, bits):
        ys, ds = y[start:start + k], dec[start:start + k]
        self.assertAlmostEqual(float(ds @ ys) / float(ys @ ys), 1.0,
                               places=5)
        start += k

  @parameterized.parameters(1, 2, 3.5, 6)
  def test_mse_scale_is_the_least_squares_fit(self, bits):
    stage = eden.EdenStage(bits, scale='mse')
    y = tf.random.stateless_normal([777], [1, 5]) ** 3
    enc = stage.encode(y, None)
    segments = stages.rate_segments(777, bits)
    unit = stage.decode(dict(enc, scale=tf.ones_like(enc['scale'])), 777,
                        None).numpy()
    start = 0
    for (k, _), s in zip(segments, enc['scale'].numpy()):
      q, ys = unit[start:start + k], y.numpy()[start:start + k]
      self.assertAlmostEqual(s, float(q @ ys) / float(q @ q), places=5)
      err = lambda a, q=q, ys=ys: float(np.sum((a * q - ys)**2))
      self.assertLess(err(s), err(s * 1.01))
      self.assertLess(err(s), err(s * 0.99))
      start += k

  def test_mse_error_is_lloyd_max_on_gaussian_data(self):
    # On N(0, 1) data (no rotation needed) each rate's error is D_b.
    y = tf.random.stateless_normal([200_000], [3, 3])
    for bits in (1, 2, 4):
      stage = eden.EdenStage(bits, scale='mse')
      dec = stage.decode(stage.encode(y, None), 200_000, None)
      vnmse = float(tf.reduce_sum((dec - y)**2) / tf.reduce_sum(y * y))
      self.assertAlmostEqual(vnmse / lloyd_max.gaussian_table(bits).mse, 1.0,
                             delta=0.02)

  def test_unbiased_only_after_enough_rotation(self):
    # EDEN's scale is unbiased after a uniformly random rotation; the
    # 3-layer rotation is close enough, one randomized Hadamard layer is not
    # (which is why only the former is `haar_like`).
    x = _x(400, seed=11)
    reps = 1500
    seeds = [[i, 23] for i in range(reps)]
    results = {}
    for name, first in (('rotation3', rotation.RotationStage(layers=3)),
                        ('hadamard', stages.HadamardStage())):
      chain = chain_lib.Chain([first, eden.EdenStage(1)])
      decs = _decodes(chain, x, seeds)
      xs = x.numpy()
      vnmse = ((decs - xs)**2).sum(axis=1).mean() / (xs @ xs)
      bias = np.linalg.norm(decs.mean(axis=0) - xs) / np.linalg.norm(xs)
      results[name] = bias / math.sqrt(vnmse / reps)  # in noise floors
    self.assertTrue(chain_lib.Chain([rotation.RotationStage(),
                                     eden.EdenStage(1)]).unbiased)
    self.assertFalse(chain_lib.Chain([stages.HadamardStage(),
                                      eden.EdenStage(1)]).unbiased)
    self.assertLess(results['rotation3'], 1.5)
    self.assertGreater(results['hadamard'], 3.0)

  def test_bad_arguments(self):
    for bad in (0, 9, 0.5, True):
      with self.assertRaisesRegex(stages.CodecError, 'eden bits'):
        eden.EdenStage(bad)
    with self.assertRaisesRegex(stages.CodecError, 'eden scale'):
      eden.EdenStage(2, scale='biased')


class RotationTest(parameterized.TestCase):

  @parameterized.parameters(1, 2, 3, 800, 1000, 5120, 51_200, 1_605_632,
                            4097, 123_457)
  def test_geometry(self, n):
    c, w = rotation.geometry(n)
    self.assertEqual(w & (w - 1), 0)
    self.assertGreaterEqual(w, c)  # the shuffle reaches every row
    self.assertGreaterEqual(c * w, n)
    self.assertLess(c * w - n, max(2 * math.sqrt(n), 1))
    if n in (800, 5120, 51_200, 1_605_632):  # the Caldas CNN's kernels
      self.assertEqual(c * w, n)

  @parameterized.parameters(2, 3)
  def test_is_orthonormal(self, layers):
    stage = rotation.RotationStage(layers=layers)
    n = 200  # padded to 13 x 16 = 208
    m = stage.output_length(n)

    @tf.function
    def columns():
      return tf.map_fn(lambda e: stage.encode(e, _seed(5))['values'],
                       tf.eye(n), fn_output_signature=tf.float32)

    r = columns().numpy().T  # [m, n]: encode = R restricted to the inputs
    self.assertEqual(r.shape, (m, n))
    np.testing.assert_allclose(r.T @ r, np.eye(n), atol=1e-5)
    y = tf.random.stateless_normal([n], [7, 7])
    np.testing.assert_allclose(stage.encode(y, _seed(5))['values'],
                               r @ y.numpy(), atol=1e-5)
    np.testing.assert_allclose(
        stage.decode(stage.encode(y, _seed(5)), n, _seed(5)), y, atol=1e-5)

  @parameterized.parameters(0, 12_345, 51_199)
  def test_spreads_a_one_hot_over_the_whole_tensor(self, position):
    n = 51_200  # 200 rows of 256: one-hot energy starts in one row
    e = tf.one_hot(position, n)
    for layers in (2, 3):
      y = rotation.RotationStage(layers=layers).encode(
          e, _seed(1))['values'].numpy()
      rows = (y.reshape(200, 256)**2).sum(axis=1) * 200  # 1 = uniform
      # Two layers: each row receives 1 or 2 of the first row's 256
      # coordinates through the shuffle, so 1/256 or 2/256 of the energy,
      # flat within the row. A third layer evens the rows out and makes the
      # coordinates Gaussian (kurtosis 3), as a uniform rotation would.
      self.assertBetween(rows.min(), 0.5 if layers == 2 else 0.75, 1.0)
      self.assertBetween(rows.max(), 1.0, 2.0 if layers == 2 else 1.25)
      kurtosis = np.mean(y**4) / np.mean(y**2)**2
      if layers == 2:
        self.assertLess(np.abs(y).max(), 2 / math.sqrt(n))
      else:
        self.assertBetween(kurtosis, 2.8, 3.2)
    # The chunked Hadamard keeps it in its 4,096-coordinate chunk.
    h = stages.HadamardStage().encode(e, _seed(1))['values'].numpy()
    self.assertLessEqual(np.count_nonzero(h), 4096)

  def test_keep_is_unbiased_with_the_subsampling_variance(self):
    # E[R^T P R] = (k / w) I exactly for the fixed kept columns: over seeds
    # the rescaled decode of a one-hot is unbiased with vNMSE w / k - 1.
    n = 64  # 8 x 8
    stage = rotation.RotationStage(layers=2, keep=0.25)
    e = tf.one_hot(5, n)
    decs = _decodes(chain_lib.Chain([stage]), e, [[i, 3] for i in
                                                   range(4000)])
    np.testing.assert_allclose(decs.mean(axis=0), e, atol=0.02)
    np.testing.assert_allclose(((decs - e.numpy())**2).sum(axis=1).mean(),
                               3.0, rtol=0.05)

  def test_bad_arguments(self):
    for kwargs, msg in ((dict(layers=1), 'layers'), (dict(keep=0.0), 'keep'),
                        (dict(keep=1.5), 'keep')):
      with self.assertRaisesRegex(stages.CodecError, msg):
        rotation.RotationStage(**kwargs)
    with self.assertRaisesRegex(stages.CodecError, 'at least 1'):
      rotation.geometry(0)


class ChainPropertiesTest(absltest.TestCase):

  def test_declared_properties(self):
    build = factory.build_chain
    self.assertTrue(build('rotation', 1.0, 2, 'x', quantizer='eden').unbiased)
    self.assertTrue(build('rotation', 0.5, 1, 'x', quantizer='eden').unbiased)
    self.assertFalse(build('rotation', 1.0, 2, 'x', quantizer='eden',
                           scale='mse').unbiased)
    self.assertFalse(build('none', 1.0, 2, 'x', quantizer='eden').unbiased)
    self.assertFalse(build('kashin', 1.0, 2, 'x', quantizer='eden').unbiased)
    self.assertTrue(build('hadamard', 0.5, 2, 'x').unbiased)
    # Two rotation layers suffice unless EDEN's scale must be unbiased.
    self.assertEqual(build('rotation', 1.0, 2, 'x', quantizer='eden',
                           scale='mse').stages[0].layers, 2)
    self.assertEqual(build('rotation', 1.0, 2, 'x').stages[0].layers, 2)
    self.assertEqual(build('rotation', 1.0, 2, 'x',
                           quantizer='eden').stages[0].layers, 3)
    for chain in _ALL.values():
      self.assertTrue(chain.homogeneous)

  def test_base_stage_declares_nothing(self):
    stage = stages.Stage()
    self.assertFalse(stage.unbiased or stage.homogeneous or
                     stage.commutes_with_sum or stage.haar_like or
                     stage.unbiased_if_rotated)
    self.assertFalse(chain_lib.Chain([stage]).unbiased)


if __name__ == '__main__':
  absltest.main()
