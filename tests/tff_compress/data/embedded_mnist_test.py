"""The embedded MNIST digits: real images, stratified seeded split."""

from __future__ import annotations

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from tff_compress.data import embedded_mnist
from tff_compress.data import federated_data


class EmbeddedMnistTest(parameterized.TestCase):

  def test_shapes_dtypes_and_range(self):
    x_train, y_train, x_test, y_test = embedded_mnist.load_embedded_mnist(
        0.2, seed=0)
    self.assertEqual(x_train.shape, (4000, 28, 28, 1))
    self.assertEqual(x_test.shape, (1000, 28, 28, 1))
    self.assertEqual(y_train.shape, (4000,))
    self.assertEqual(y_test.shape, (1000,))
    for x in (x_train, x_test):
      self.assertEqual(x.dtype, np.float32)
      self.assertGreaterEqual(x.min(), 0.0)
      self.assertLessEqual(x.max(), 1.0)
      self.assertEqual(x.max(), 1.0)  # 255 / 255 occurs in real digits.
    for y in (y_train, y_test):
      self.assertEqual(y.dtype, np.int32)
      self.assertEqual(set(np.unique(y)), set(range(10)))

  @parameterized.parameters(0.1, 0.2, 0.5)
  def test_stratified_split(self, fraction):
    _, y_train, _, y_test = embedded_mnist.load_embedded_mnist(fraction, 3)
    self.assertEqual(len(y_train) + len(y_test), 5000)
    per_class = round(fraction * 500)
    np.testing.assert_array_equal(np.bincount(y_test, minlength=10),
                                  np.full(10, per_class))
    np.testing.assert_array_equal(np.bincount(y_train, minlength=10),
                                  np.full(10, 500 - per_class))

  def test_train_and_test_are_disjoint_and_cover_all_images(self):
    x_train, _, x_test, _ = embedded_mnist.load_embedded_mnist(0.2, seed=0)
    rows = np.concatenate([x_train, x_test]).reshape(5000, -1)
    # All 5000 images come back once: same multiset of image checksums.
    all_images, _ = embedded_mnist.raw_digits()
    def sums(a):
      return np.sort(a.reshape(len(a), -1) @ np.arange(784, dtype=np.float64))
    np.testing.assert_allclose(sums(rows), sums(all_images), rtol=1e-6)

  def test_deterministic_for_a_seed(self):
    a = embedded_mnist.load_embedded_mnist(0.2, seed=5)
    b = embedded_mnist.load_embedded_mnist(0.2, seed=5)
    c = embedded_mnist.load_embedded_mnist(0.2, seed=6)
    for u, v in zip(a, b):
      np.testing.assert_array_equal(u, v)
    self.assertFalse(np.array_equal(a[1], c[1]))

  def test_real_digits(self):
    x, y, x_test, y_test = embedded_mnist.load_embedded_mnist(0.2, seed=0)
    x = np.concatenate([x, x_test])[..., 0]
    y = np.concatenate([y, y_test])
    self.assertTrue(np.all(np.bincount(y) > 300))
    # Background: the outer two-pixel frame of MNIST digits is almost black.
    frame = np.concatenate([x[:, :2].ravel(), x[:, -2:].ravel(),
                            x[:, :, :2].ravel(), x[:, :, -2:].ravel()])
    self.assertLess(frame.mean(), 0.01)
    # A "1" is a vertical stroke: its mean image is bright in the centre
    # columns and dark at the left/right borders.
    ones = x[y == 1].mean(axis=0)
    self.assertGreater(ones[4:24, 13:15].mean(), 0.4)
    self.assertLess(ones[:, :5].mean(), 0.02)
    self.assertLess(ones[:, -5:].mean(), 0.02)
    # A "0" is a ring: dark in the middle, bright around it.
    zeros = x[y == 0].mean(axis=0)
    self.assertLess(zeros[12:16, 12:16].mean(), zeros[6:9, 10:18].mean())
    # Different digits look different.
    self.assertGreater(np.abs(ones - zeros).mean(), 0.05)

  @parameterized.parameters(0.0, 1.0, -0.1, 1.5)
  def test_bad_test_fraction(self, fraction):
    with self.assertRaisesRegex(federated_data.DataError,
                                r'data.test_fraction=.* must be in \(0, 1\)'):
      embedded_mnist.load_embedded_mnist(fraction, seed=0)

  def test_bad_seed(self):
    with self.assertRaisesRegex(federated_data.DataError, r'seed=-3'):
      embedded_mnist.load_embedded_mnist(0.2, seed=-3)


if __name__ == '__main__':
  absltest.main()
