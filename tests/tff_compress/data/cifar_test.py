"""CIFAR loader on tiny files in the real Toronto python-pickle format."""

from __future__ import annotations

import os
import pickle
import struct

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from tff_compress.data import cifar
from tff_compress.data import federated_data

_PER_BATCH = 20


def _batch(label_key: bytes, num_classes: int, offset: int, rng) -> dict:
  """A batch dict as the Toronto files hold it (bytes keys, uint8 rows)."""
  data = rng.integers(0, 256, (_PER_BATCH, 3072), dtype=np.uint8)
  labels = [(offset + i) % num_classes for i in range(_PER_BATCH)]
  batch = {b'batch_label': b'training batch', label_key: labels,
           b'data': data,
           b'filenames': [b'img_%d.png' % i for i in range(_PER_BATCH)]}
  if label_key == b'fine_labels':
    batch[b'coarse_labels'] = [l // 5 for l in labels]
  return batch


class _Python2Pickler(pickle._Pickler):  # pylint: disable=protected-access
  """Writes str/bytes as Python 2's cPickle did (BINSTRING opcodes).

  The Toronto files were written by Python 2, where keys, dtype codes and
  array buffers are ``str``; Python 3 reads them with ``encoding='bytes'``.
  """

  dispatch = dict(pickle._Pickler.dispatch)  # pylint: disable=protected-access

  def save_py2_str(self, obj):
    raw = obj.encode('latin1') if isinstance(obj, str) else obj
    if len(raw) < 256:
      self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
    else:
      self.write(pickle.BINSTRING + struct.pack('<i', len(raw)) + raw)
    self.memoize(obj)

  dispatch[bytes] = save_py2_str
  dispatch[str] = save_py2_str


def _write(path: str, content, protocol='py2') -> None:
  """Pickles `content`; protocol 'py2' mimics the original Python 2 files."""
  with open(path, 'wb') as f:
    if protocol == 'py2':
      _Python2Pickler(f, protocol=2).dump(content)
    else:
      pickle.dump(content, f, protocol=protocol)


def _make_cache(root: str, num_classes: int, protocol='py2') -> dict:
  """Writes every expected file; returns {file name: batch dict}."""
  rng = np.random.default_rng(num_classes)
  if num_classes == 10:
    folder, names, key = ('cifar-10-batches-py',
                          [f'data_batch_{i}' for i in range(1, 6)] +
                          ['test_batch'], b'labels')
  else:
    folder, names, key = 'cifar-100-python', ['train', 'test'], b'fine_labels'
  os.makedirs(os.path.join(root, folder))
  batches = {}
  for i, name in enumerate(names):
    batches[name] = _batch(key, num_classes, 7 * i, rng)
    _write(os.path.join(root, folder, name), batches[name], protocol)
  return batches


class CifarTest(parameterized.TestCase):

  @parameterized.parameters((10, 'py2'), (10, 2), (10, 5), (100, 'py2'),
                            (100, 4))
  def test_loads_splits(self, num_classes, protocol):
    root = self.create_tempdir().full_path
    batches = _make_cache(root, num_classes, protocol)
    x_train, y_train, x_test, y_test = cifar.load_cifar_arrays(
        root, num_classes)
    n_train = 5 * _PER_BATCH if num_classes == 10 else _PER_BATCH
    self.assertEqual(x_train.shape, (n_train, 32, 32, 3))
    self.assertEqual(x_test.shape, (_PER_BATCH, 32, 32, 3))
    for x in (x_train, x_test):
      self.assertEqual(x.dtype, np.float32)
      self.assertGreaterEqual(x.min(), 0.0)
      self.assertLessEqual(x.max(), 1.0)
    key = b'labels' if num_classes == 10 else b'fine_labels'
    train_names = ([f'data_batch_{i}' for i in range(1, 6)]
                   if num_classes == 10 else ['train'])
    test_name = 'test_batch' if num_classes == 10 else 'test'
    np.testing.assert_array_equal(
        y_train, np.concatenate([batches[n][key] for n in train_names]))
    np.testing.assert_array_equal(y_test, batches[test_name][key])
    self.assertEqual(y_train.dtype, np.int32)
    # Pixel values survive exactly: row layout R(1024) G(1024) B(1024).
    rows = batches[test_name][b'data']
    np.testing.assert_allclose(
        x_test * 255.0,
        rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), atol=1e-4)

  def test_channel_order_and_orientation(self):
    root = self.create_tempdir().full_path
    batches = _make_cache(root, 10)
    image = np.zeros(3072, np.uint8)
    image[0 * 1024 + 5 * 32 + 7] = 255   # red plane, row 5, column 7
    image[1 * 1024 + 2 * 32 + 30] = 128  # green plane, row 2, column 30
    image[2 * 1024 + 31 * 32 + 0] = 51   # blue plane, row 31, column 0
    batch = batches['test_batch']
    batch[b'data'][0] = image
    _write(os.path.join(root, 'cifar-10-batches-py', 'test_batch'), batch)
    _, _, x_test, _ = cifar.load_cifar_arrays(root, 10)
    first = x_test[0]
    self.assertEqual(first[5, 7, 0], 1.0)
    self.assertAlmostEqual(first[2, 30, 1], 128 / 255, places=6)
    self.assertAlmostEqual(first[31, 0, 2], 0.2, places=6)
    self.assertEqual(np.count_nonzero(first), 3)

  def test_missing_files_are_all_listed(self):
    root = self.create_tempdir().full_path
    _make_cache(root, 10)
    folder = os.path.join(root, 'cifar-10-batches-py')
    os.remove(os.path.join(folder, 'data_batch_3'))
    os.remove(os.path.join(folder, 'test_batch'))
    with self.assertRaises(federated_data.DataNotFoundError) as cm:
      cifar.load_cifar_arrays(root, 10)
    message = str(cm.exception)
    self.assertIn(os.path.join(folder, 'data_batch_3'), message)
    self.assertIn(os.path.join(folder, 'test_batch'), message)
    self.assertNotIn('data_batch_1', message)
    self.assertIn('cifar-10-python.tar.gz', message)

  def test_empty_cache_dir_lists_every_file(self):
    root = self.create_tempdir().full_path
    with self.assertRaises(federated_data.DataNotFoundError) as cm:
      cifar.load_cifar_arrays(root, 100)
    for path in cifar.expected_files(root, 100):
      self.assertIn(path, str(cm.exception))
    self.assertIn(os.path.join(root, 'cifar-100-python', 'train'),
                  cifar.expected_files(root, 100))

  def test_default_cache_dir_is_keras(self):
    self.assertEqual(
        cifar.expected_files('', 10)[0],
        os.path.join(os.path.expanduser('~'), '.keras', 'datasets',
                     'cifar-10-batches-py', 'data_batch_1'))

  @parameterized.named_parameters(
      ('not_a_pickle', b'this is not a pickle at all',
       r'not a valid python-format CIFAR batch'),
      ('truncated', None, r'not a valid python-format CIFAR batch'),
      ('not_a_dict', [1, 2, 3], r'holds a list, expected a dict'),
      ('wrong_keys', {b'data': np.zeros((2, 3072), np.uint8),
                      b'fine_labels': [0, 1]},
       r"lacks the keys \['labels'\]"),
      ('wrong_row_length', {b'data': np.zeros((2, 1024), np.uint8),
                            b'labels': [0, 1]},
       r'data has shape \(2, 1024\)'),
      ('label_count', {b'data': np.zeros((2, 3072), np.uint8),
                       b'labels': [0]}, r'expected 2 integer labels'),
      ('label_range', {b'data': np.zeros((2, 3072), np.uint8),
                       b'labels': [0, 10]}, r'labels outside 0..9'),
      ('code_in_pickle', {b'data': np.zeros((2, 3072), np.uint8),
                          b'labels': [0, 1], b'x': os.getcwd},
       r'refusing to load posix.getcwd'),
  )
  def test_corrupt_file(self, content, message):
    root = self.create_tempdir().full_path
    _make_cache(root, 10)
    path = os.path.join(root, 'cifar-10-batches-py', 'data_batch_2')
    if isinstance(content, bytes):
      with open(path, 'wb') as f:
        f.write(content)
    elif content is None:
      with open(path, 'rb') as f:
        head = f.read(1000)
      with open(path, 'wb') as f:
        f.write(head)
    else:
      _write(path, content)
    with self.assertRaisesRegex(federated_data.DataError, message) as cm:
      cifar.load_cifar_arrays(root, 10)
    self.assertIn(path, str(cm.exception))
    self.assertNotIsInstance(cm.exception, federated_data.DataNotFoundError)

  def test_unknown_num_classes(self):
    with self.assertRaisesRegex(federated_data.DataError,
                                r'num_classes=20 is not one of \[10, 100\]'):
      cifar.load_cifar_arrays(self.create_tempdir().full_path, 20)


if __name__ == '__main__':
  absltest.main()
