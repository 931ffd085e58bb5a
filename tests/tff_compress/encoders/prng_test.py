"""The integer-hash PRNG: statistics, and bit-identity in TFLite builtins."""

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from tff_compress.encoders import prng


def _seed(a, b=17):
  return tf.constant([a, b], tf.int64)


class PrngStatisticsTest(absltest.TestCase):

  def test_hashes_are_distinct_and_deterministic(self):
    h = prng.hashes(200_000, _seed(3)).numpy()
    self.assertEqual(len(np.unique(h)), h.size)
    np.testing.assert_array_equal(h, prng.hashes(200_000, _seed(3)))
    self.assertFalse(np.array_equal(h, prng.hashes(200_000, _seed(4))))
    # The high word of a seed matters as much as the low one.
    self.assertFalse(np.array_equal(
        prng.hashes(100, tf.constant([1, 2**40], tf.int64)),
        prng.hashes(100, tf.constant([1, 2**41], tf.int64))))

  def test_uniform_is_uniform_on_its_grid(self):
    u = prng.uniform(200_001, _seed(5)).numpy()
    self.assertEqual(u.shape, (200_001,))
    self.assertGreater(u.min(), 0.0)
    self.assertLess(u.max(), 1.0)
    grid = u * 65536 - 0.5
    np.testing.assert_array_equal(grid, np.round(grid))
    counts = np.histogram(u, bins=64, range=(0, 1))[0]
    expected = u.size / 64
    chi2 = ((counts - expected)**2 / expected).sum()
    self.assertLess(chi2, 63 + 5 * np.sqrt(2 * 63))  # ~5 sigma

  def test_signs_are_balanced(self):
    s = prng.signs(100_003, _seed(6)).numpy()
    self.assertEqual(s.shape, (100_003,))
    self.assertEqual(set(np.unique(s)), {-1.0, 1.0})
    self.assertLess(abs(s.mean()), 5 / np.sqrt(s.size))
    # Neighbouring signs (same hash word) are uncorrelated.
    self.assertLess(abs(np.mean(s[1:] * s[:-1])), 5 / np.sqrt(s.size))

  def test_flip_signs_is_multiplication_by_signs(self):
    for n in (1, 31, 32, 33, 4097):
      x = tf.random.stateless_normal([n], [n, 1])
      np.testing.assert_array_equal(prng.flip_signs(x, _seed(n)),
                                    x * prng.signs(n, _seed(n)))
    x = tf.reshape(tf.range(-6.0, 6.0), [3, 4])  # any shape; -0.0 too
    flipped = prng.flip_signs(x, _seed(2)).numpy()
    self.assertEqual(flipped.shape, (3, 4))
    np.testing.assert_array_equal(np.signbit(flipped), np.signbit(
        (x * tf.reshape(prng.signs(12, _seed(2)), [3, 4])).numpy()))

  def test_consecutive_seeds_are_independent(self):
    draws = tf.function(lambda: tf.stack(
        [prng.uniform(300, _seed(i)) for i in range(200)]))().numpy()
    # Per coordinate over seeds: mean 1/2 within 5 standard errors.
    z = (draws.mean(0) - 0.5) / (np.sqrt(1 / 12) / np.sqrt(200))
    self.assertLess(np.abs(z).max(), 5.0)
    # Correlation between the streams of two seeds ~ N(0, 1/300).
    c = np.corrcoef(draws)
    np.fill_diagonal(c, 0)
    self.assertLess(np.abs(c).max(), 5.5 / np.sqrt(300))

  def test_top_k_subsets_are_uniform(self):
    # Subsampling keeps the k largest hashes: each position must be kept
    # with probability k / n.
    n, k, trials = 40, 10, 4000

    @tf.function
    def subsets():
      seeds = tf.stack([tf.range(trials, dtype=tf.int64),
                        tf.fill([trials], tf.constant(17, tf.int64))], 1)
      return tf.map_fn(
          lambda s: tf.math.top_k(prng.hashes(n, prng.fold_in(s, 2)),
                                  k).indices, seeds,
          fn_output_signature=tf.int32)

    kept = np.bincount(subsets().numpy().ravel(), minlength=n)
    expected = trials * k / n
    chi2 = ((kept - expected)**2 / (expected * (1 - k / n))).sum()
    self.assertLess(chi2, (n - 1) + 5 * np.sqrt(2 * (n - 1)))

  def test_fold_in_and_fingerprint_separate_inputs(self):
    folded = tf.function(lambda: tf.map_fn(
        lambda i: prng.fold_in(_seed(1), i), tf.range(2000),
        fn_output_signature=tf.int64))().numpy()
    seeds = {tuple(s) for s in folded}
    self.assertLen(seeds, 2000)
    x = tf.random.stateless_normal([5000], [1, 2])
    fp = int(prng.fingerprint([x], _seed(0)))
    self.assertEqual(fp, int(prng.fingerprint([x], _seed(0))))
    self.assertNotEqual(fp, int(prng.fingerprint([x], _seed(1))))
    nudged = tf.tensor_scatter_nd_update(x, [[1234]], [np.nextafter(
        x[1234].numpy(), np.float32(9))])
    self.assertNotEqual(fp, int(prng.fingerprint([nudged], _seed(0))))
    self.assertNotEqual(fp, int(prng.fingerprint([x[:2500], x[2500:]],
                                                 _seed(0))))
    a = prng.update_seed([x], 0, 3).numpy()
    self.assertEqual(a[1], 3)
    self.assertNotEqual(a[0], prng.update_seed([x], 1, 3).numpy()[0])


class PrngTfliteTest(absltest.TestCase):
  """Every function converts to TFLite builtins and gives the same bits."""

  def test_builtin_only_and_bit_identical(self):

    class Module(tf.Module):

      @tf.function(input_signature=[tf.TensorSpec([2], tf.int64),
                                    tf.TensorSpec([777], tf.float32),
                                    tf.TensorSpec([], tf.int64)])
      def draw(self, seed, x, round_num):
        folded = prng.fold_in(seed, 7)
        return {
            'hashes': prng.hashes(1001, seed),
            'uniform': prng.uniform(999, folded),
            'signs': prng.signs(1003, seed),
            'flipped': prng.flip_signs(x, folded),
            'folded': folded,
            'fingerprint': prng.fingerprint([x, x[:5]], seed),
            'update_seed': prng.update_seed([x], 12345, round_num),
        }

    module = Module()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.draw.get_concrete_function()], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = tf.lite.Interpreter(
        model_content=converter.convert(),
        experimental_op_resolver_type=(
            tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    run = interpreter.get_signature_runner()
    rng = np.random.default_rng(0)
    for seed in ([0, 0], [-1, 2**62 + 5], [123456789, -987654321]):
      x = rng.normal(size=777).astype(np.float32)
      args = dict(seed=np.array(seed, np.int64), x=x,
                  round_num=np.array(4, np.int64))
      lite = run(**args)
      want = module.draw(**args)
      for key, value in want.items():
        np.testing.assert_array_equal(lite[key], value.numpy(), key)


if __name__ == '__main__':
  absltest.main()
