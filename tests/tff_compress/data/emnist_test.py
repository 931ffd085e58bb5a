"""Federated EMNIST through TFF's real loader, on a tiny database of the
exact format TFF reads (``<cache_dir>/emnist_all.sqlite``)."""

from __future__ import annotations

import os
import sqlite3
from unittest import mock
import urllib.request

from absl.testing import absltest
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.data import emnist
from tff_compress.data import federated_data

# Writer ids in LEAF's style, deliberately not inserted in sorted order.
# writer -> (number of train examples, number of test examples)
_WRITERS = {'f0002_07': (4, 2), 'f0000_14': (3, 1), 'f0001_41': (5, 2)}
# A writer that only has letters (in the 62-class splits only).
_LETTER_WRITER = 'f0003_33'


def _example(pixels: np.ndarray, label: int) -> bytes:
  """A tf.train.Example as stored in emnist_all.sqlite."""
  return tf.train.Example(features=tf.train.Features(feature={
      'pixels': tf.train.Feature(float_list=tf.train.FloatList(
          value=pixels.reshape(-1).tolist())),
      'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
  })).SerializeToString()


def _image(row: int, col: int) -> np.ndarray:
  """TFF convention: 1.0 = white background, ink 0.0 at (row, col)."""
  image = np.ones((28, 28), np.float32)
  image[row, col] = 0.0
  image[27, 27] = 0.25  # A grey pixel: 0.75 after inversion.
  return image


def _label(writer_index: int, i: int, split: str) -> int:
  return (writer_index * 3 + i + (5 if split == 'test' else 0)) % 10


def _write_database(path: str, *, bad_proto_for: str | None = None,
                    skip_tables: tuple[str, ...] = (),
                    only_all_splits: bool = False) -> None:
  """Writes the two tables TFF's SqlClientData requires (same DDL as TFF's
  own `sql_client_data_utils.save_to_sql_client_data`)."""
  with sqlite3.connect(path) as con:
    if 'examples' not in skip_tables:
      con.execute('CREATE TABLE examples (split_name TEXT NOT NULL, '
                  'client_id TEXT NOT NULL, '
                  'serialized_example_proto BLOB NOT NULL);')
    con.execute('CREATE TABLE client_metadata (client_id TEXT NOT NULL, '
                'split_name TEXT NOT NULL, num_examples INTEGER NOT NULL);')
    prefixes = ('all',) if only_all_splits else ('digits_only', 'all')
    for w, (writer, sizes) in enumerate(sorted(_WRITERS.items())):
      for split, count in zip(('train', 'test'), sizes):
        for prefix in prefixes:
          for i in range(count):
            proto = _example(_image(i, w), _label(w, i, split))
            if writer == bad_proto_for and split == 'train':
              proto = tf.train.Example(features=tf.train.Features(feature={
                  'pixels': tf.train.Feature(float_list=tf.train.FloatList(
                      value=[0.5] * 10)),
                  'label': tf.train.Feature(
                      int64_list=tf.train.Int64List(value=[1]))
              })).SerializeToString()
            if 'examples' not in skip_tables:
              con.execute('INSERT INTO examples VALUES (?, ?, ?)',
                          (f'{prefix}_{split}', writer, proto))
          con.execute('INSERT INTO client_metadata VALUES (?, ?, ?)',
                      (writer, f'{prefix}_{split}', count))
    # A 62-class writer with letters: label 40 is the lower-case 'e'.
    for split in ('train', 'test'):
      if 'examples' not in skip_tables:
        con.execute('INSERT INTO examples VALUES (?, ?, ?)',
                    (f'all_{split}', _LETTER_WRITER,
                     _example(_image(0, 0), 40)))
      con.execute('INSERT INTO client_metadata VALUES (?, ?, ?)',
                  (_LETTER_WRITER, f'all_{split}', 1))


class EmnistTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    # TFF must never go to the network: any download attempt fails the test.
    patcher = mock.patch.object(
        urllib.request, 'urlopen',
        side_effect=AssertionError('TFF tried to download EMNIST'))
    patcher.start()
    self.addCleanup(patcher.stop)
    self.cache_dir = self.create_tempdir().full_path
    self.path = os.path.join(self.cache_dir, 'emnist_all.sqlite')

  def test_expected_path(self):
    self.assertEqual(emnist.expected_path(self.cache_dir), self.path)
    self.assertEqual(
        emnist.expected_path(''),
        os.path.join(os.path.expanduser('~'), '.tff', 'emnist_all.sqlite'))
    self.assertEqual(emnist.split_names(True),
                     ('digits_only_train', 'digits_only_test'))
    self.assertEqual(emnist.split_names(False), ('all_train', 'all_test'))

  def test_missing_cache_names_the_path_and_creates_nothing(self):
    cache_dir = os.path.join(self.cache_dir, 'not', 'there')
    with self.assertRaises(federated_data.DataNotFoundError) as cm:
      emnist.load_emnist(cache_dir, only_digits=True, max_clients=None)
    message = str(cm.exception)
    self.assertIn(os.path.join(cache_dir, 'emnist_all.sqlite'), message)
    self.assertIn(emnist.DOWNLOAD_URL, message)
    self.assertFalse(os.path.exists(cache_dir))

  def test_compressed_file_only(self):
    with open(self.path + '.lzma', 'wb') as f:
      f.write(b'\x5d\x00\x00')
    with self.assertRaisesRegex(federated_data.DataNotFoundError,
                                r'found the compressed .*sqlite.lzma; '
                                r'decompress it'):
      emnist.load_emnist(self.cache_dir, True, None)
    self.assertFalse(os.path.exists(self.path))

  def test_loads_writers_through_tff(self):
    _write_database(self.path)
    real_load_data = tff.simulation.datasets.emnist.load_data
    with mock.patch.object(tff.simulation.datasets.emnist, 'load_data',
                           wraps=real_load_data) as spy:
      data = emnist.load_emnist(self.cache_dir, only_digits=True,
                                max_clients=None)
    spy.assert_called_once_with(only_digits=True, cache_dir=self.cache_dir)
    self.assertEqual(data.name, 'emnist')
    self.assertEqual(data.input_shape, (28, 28, 1))
    self.assertEqual(data.num_classes, 10)
    self.assertEqual(data.client_ids, ('f0000_14', 'f0001_41', 'f0002_07'))
    for w, writer in enumerate(data.client_ids):
      n_train = _WRITERS[writer][0]
      self.assertEqual(data.client_size(writer), n_train)
      x, y = data.client_arrays(writer)
      self.assertEqual(x.shape, (n_train, 28, 28, 1))
      self.assertEqual(x.dtype, np.float32)
      self.assertEqual(y.dtype, np.int32)
      # SQLite returns a writer's rows in insertion order.
      np.testing.assert_array_equal(
          y, [_label(w, i, 'train') for i in range(n_train)])
      for i in range(n_train):
        # Inverted: background 0.0, ink 1.0, grey 0.25 -> 0.75.
        expected = np.zeros((28, 28), np.float32)
        expected[i, w] = 1.0
        expected[27, 27] = 0.75
        np.testing.assert_allclose(x[i, ..., 0], expected, atol=1e-6)
    self.assertEqual(data.test_x.shape, (5, 28, 28, 1))
    np.testing.assert_array_equal(
        data.test_y,
        [_label(w, i, 'test') for w, writer in enumerate(data.client_ids)
         for i in range(_WRITERS[writer][1])])
    self.assertAlmostEqual(float(data.test_x.max()), 1.0)
    self.assertEqual(float(data.test_x[0, 5, 5, 0]), 0.0)
    np.testing.assert_array_equal(data.label_histogram().sum(axis=1),
                                  [3, 5, 4])

  def test_max_clients_keeps_the_first_writers(self):
    _write_database(self.path)
    data = emnist.load_emnist(self.cache_dir, True, max_clients=2)
    self.assertEqual(data.client_ids, ('f0000_14', 'f0001_41'))
    self.assertLen(data.test_y, 1 + 2)
    with self.assertRaisesRegex(federated_data.DataError, r'unknown client'):
      data.client_arrays('f0002_07')
    data = emnist.load_emnist(self.cache_dir, True, max_clients=100)
    self.assertLen(data.client_ids, 3)

  def test_all_62_classes(self):
    _write_database(self.path)
    data = emnist.load_emnist(self.cache_dir, only_digits=False,
                              max_clients=None)
    self.assertEqual(data.num_classes, 62)
    self.assertEqual(data.client_ids,
                     ('f0000_14', 'f0001_41', 'f0002_07', _LETTER_WRITER))
    _, y = data.client_arrays(_LETTER_WRITER)
    np.testing.assert_array_equal(y, [40])
    self.assertIn(40, data.test_y)

  def test_not_a_database(self):
    with open(self.path, 'wb') as f:
      f.write(b'garbage, not SQLite' * 100)
    with self.assertRaisesRegex(federated_data.DataError,
                                r'emnist_all.sqlite is unreadable'):
      emnist.load_emnist(self.cache_dir, True, None)

  def test_missing_table(self):
    _write_database(self.path, skip_tables=('examples',))
    with self.assertRaisesRegex(federated_data.DataError,
                                r"has no table 'examples'"):
      emnist.load_emnist(self.cache_dir, True, None)

  def test_missing_split(self):
    _write_database(self.path, only_all_splits=True)
    with self.assertRaisesRegex(federated_data.DataError,
                                r"no clients in split 'digits_only_train'"):
      emnist.load_emnist(self.cache_dir, True, None)

  def test_malformed_example(self):
    _write_database(self.path, bad_proto_for='f0001_41')  # train split only
    data = emnist.load_emnist(self.cache_dir, True, max_clients=None)
    self.assertEqual(data.client_arrays('f0000_14')[0].shape[0], 3)
    with self.assertRaisesRegex(
        federated_data.DataError,
        r"cannot read federated EMNIST writer 'f0001_41' in .*"
        r"emnist_all.sqlite: .*Can't parse serialized Example"):
      data.client_arrays('f0001_41')

  def test_bad_max_clients(self):
    with self.assertRaisesRegex(federated_data.DataError,
                                r'max_clients=0 must be >= 1'):
      emnist.load_emnist(self.cache_dir, True, max_clients=0)


if __name__ == '__main__':
  absltest.main()
