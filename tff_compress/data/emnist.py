"""Federated EMNIST (LEAF's per-writer split) through TFF's own loader.

``tff.simulation.datasets.emnist.load_data(only_digits, cache_dir)`` (TFF
0.87) reads ONE uncompressed SQLite file, ``<cache_dir>/emnist_all.sqlite``.
It is published LZMA-compressed as
https://storage.googleapis.com/tff-datasets-public/emnist_all.sqlite.lzma and
TFF, when the ``.sqlite`` file is absent, downloads and decompresses it on the
fly (a ``.sqlite.lzma`` file in the cache is never looked at). To stay offline
:func:`load_emnist` checks the file first and raises
:class:`~tff_compress.data.federated_data.DataNotFoundError` instead.

The database (format of ``tff.simulation.datasets.SqlClientData``) has two
tables:

* ``examples(split_name TEXT, client_id TEXT, serialized_example_proto
  BLOB)``: one row per image; the blob is a ``tf.train.Example`` with float
  feature ``pixels`` (784 values, a row-major 28x28 image) and int64 feature
  ``label``;
* ``client_metadata(client_id TEXT, split_name TEXT, num_examples
  INTEGER)``: TFF takes the client ids of a split from here.

Both the 10-class and the 62-class variants live in the same file, as the
splits ``digits_only_train`` / ``digits_only_test`` and ``all_train`` /
``all_test``. Every writer (client) has examples in both its train and test
split.

Pixel convention: TFF's EMNIST uses 1.0 for the white background and 0.0 for
the ink. :func:`load_emnist` returns ``1 - pixels`` so that, like MNIST and the
embedded digits, 0.0 is background and 1.0 is ink.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.data import federated_data

DataError = federated_data.DataError
DataNotFoundError = federated_data.DataNotFoundError

DATABASE_FILENAME = 'emnist_all.sqlite'
DOWNLOAD_URL = (
    'https://storage.googleapis.com/tff-datasets-public/'
    'emnist_all.sqlite.lzma')
INPUT_SHAPE = (28, 28, 1)
_EXAMPLES_COLUMNS = frozenset(
    ['split_name', 'client_id', 'serialized_example_proto'])
_METADATA_COLUMNS = frozenset(['client_id', 'split_name'])
# Examples per tf.data batch when materialising a client or the test split.
_READ_BATCH = 4096


def default_cache_dir() -> str:
  """TFF's default dataset cache, ``~/.tff``."""
  return os.path.join(os.path.expanduser('~'), '.tff')


def expected_path(cache_dir: str) -> str:
  """Absolute path of the SQLite file TFF reads for `cache_dir`.

  Args:
    cache_dir: Cache directory; empty means TFF's default ``~/.tff``.

  Returns:
    ``<cache_dir>/emnist_all.sqlite``.
  """
  root = os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir()))
  return os.path.join(root, DATABASE_FILENAME)


def split_names(only_digits: bool) -> tuple[str, str]:
  """(train, test) split names TFF uses in the database."""
  prefix = 'digits_only' if only_digits else 'all'
  return f'{prefix}_train', f'{prefix}_test'


def _check_present(path: str, cache_dir: str) -> None:
  if os.path.isfile(path):
    return
  compressed = path + '.lzma'
  if os.path.isfile(compressed):
    hint = (f'found the compressed {compressed}; decompress it with '
            f'`unlzma -k {compressed}` (or `xz --format=lzma -dk ...`)')
  else:
    hint = (f'download {DOWNLOAD_URL} and decompress it there with '
            f'`unlzma {os.path.basename(compressed)}` '
            '(or `xz --format=lzma -d ...`)')
  raise DataNotFoundError(
      f'federated EMNIST cache file {path} is missing '
      f'(data.cache_dir={cache_dir!r}); {hint}. TFF would otherwise try to '
      'download it.')


def _train_counts(path: str, train_split: str) -> dict[str, int]:
  """{client_id: number of examples of `train_split`} read with SQLite.

  Checks the schema that TFF's ``SqlClientData`` requires, so that a wrong
  file fails here with a DataError and not deep inside TFF.
  """
  try:
    # Read-only: sqlite3.connect would silently create a missing file.
    connection = sqlite3.connect(f'file:{path}?mode=ro', uri=True)
    try:
      tables = {r[0] for r in connection.execute(
          "SELECT name FROM sqlite_master WHERE type = 'table'")}
      for table, required in (('examples', _EXAMPLES_COLUMNS),
                              ('client_metadata', _METADATA_COLUMNS)):
        if table not in tables:
          raise DataError(
              f'federated EMNIST database {path} has no table {table!r} '
              f'(tables: {sorted(tables)}); is it emnist_all.sqlite?')
        columns = {r[1] for r in connection.execute(
            f'PRAGMA table_info({table})')}
        if not required <= columns:
          raise DataError(
              f'federated EMNIST database {path}: table {table!r} lacks '
              f'columns {sorted(required - columns)}')
      rows = connection.execute(
          'SELECT client_id, COUNT(*) FROM examples WHERE split_name = ? '
          'GROUP BY client_id', (train_split,)).fetchall()
    finally:
      connection.close()
  except sqlite3.Error as e:
    raise DataError(
        f'federated EMNIST database {path} is unreadable: {e}') from e
  return {str(client_id): int(count) for client_id, count in rows}


def _empty_arrays() -> tuple[np.ndarray, np.ndarray]:
  return np.zeros((0,) + INPUT_SHAPE, np.float32), np.zeros(0, np.int32)


def _materialise(dataset: tf.data.Dataset, num_classes: int,
                 where: str) -> tuple[np.ndarray, np.ndarray]:
  """TFF's parsed EMNIST elements -> (x [n, 28, 28, 1] ink=1, y int32 [n])."""
  xs, ys = [], []
  try:
    for batch in dataset.batch(_READ_BATCH):
      xs.append(batch['pixels'].numpy())
      ys.append(batch['label'].numpy())
  except tf.errors.OpError as e:
    raise DataError(f'cannot read federated EMNIST {where}: {e.message}') from e
  if not xs:
    return _empty_arrays()
  pixels = np.concatenate(xs)
  labels = np.concatenate(ys).astype(np.int32)
  if labels.min() < 0 or labels.max() >= num_classes:
    raise DataError(
        f'federated EMNIST {where}: labels {labels.min()}..{labels.max()} '
        f'are outside 0..{num_classes - 1}')
  if pixels.min() < 0.0 or pixels.max() > 1.0:
    raise DataError(f'federated EMNIST {where}: pixels outside [0, 1]')
  images = (np.float32(1.0) - pixels).reshape((-1,) + INPUT_SHAPE)
  return images.astype(np.float32), labels


def load_emnist(
    cache_dir: str, only_digits: bool, max_clients: Optional[int]
) -> federated_data.FederatedData:
  """Federated EMNIST with its natural clients (the writers).

  Args:
    cache_dir: Directory holding ``emnist_all.sqlite`` (see the module
      docstring); empty means TFF's default ``~/.tff``.
    only_digits: True: 10 digit classes (3,383 writers in the full data);
      False: 62 classes, digits then upper- then lower-case letters (3,400
      writers).
    max_clients: Keep only the first `max_clients` writers in sorted id order
      (all of them if None or if there are fewer).

  Returns:
    A FederatedData named ``'emnist'`` with input shape (28, 28, 1), images
    float32 in [0, 1] with 0 = background and 1 = ink, sorted writer ids as
    client ids (writers without training examples are left out), clients
    loaded lazily through TFF with sizes known upfront, and as the test split
    the concatenated test examples of the kept writers.

  Raises:
    DataNotFoundError: ``<cache_dir>/emnist_all.sqlite`` does not exist.
    DataError: The file is not a valid federated EMNIST database, has no
      clients or test examples, or `max_clients` is below 1.
  """
  if max_clients is not None and max_clients < 1:
    raise DataError(f'max_clients={max_clients} must be >= 1 (or None)')
  path = expected_path(cache_dir)
  _check_present(path, cache_dir)
  num_classes = 10 if only_digits else 62
  train_split, test_split = split_names(only_digits)
  counts = _train_counts(path, train_split)
  try:
    train, test = tff.simulation.datasets.emnist.load_data(
        only_digits=only_digits, cache_dir=os.path.dirname(path))
  except StopIteration as e:
    # TFF's preprocess() peeks at the first client id of each split.
    raise DataError(
        f'federated EMNIST database {path} has no clients in split '
        f'{train_split!r} or {test_split!r}') from e
  except (sqlite3.Error, tf.errors.OpError) as e:
    raise DataError(
        f'TFF could not open federated EMNIST database {path}: {e}') from e
  client_ids = sorted(c for c in train.client_ids if counts.get(c, 0) > 0)
  if max_clients is not None:
    client_ids = client_ids[:max_clients]
  if not client_ids:
    raise DataError(
        f'federated EMNIST database {path} has no writer with examples in '
        f'split {train_split!r}')

  def get_client(client_id: str) -> tuple[np.ndarray, np.ndarray]:
    return _materialise(train.create_tf_dataset_for_client(client_id),
                        num_classes, f'writer {client_id!r} in {path}')

  test_ids = sorted(set(client_ids) & set(test.client_ids))
  if test_ids:
    # One pipeline over all kept writers (TFF's serializable per-client fn).
    test_x, test_y = _materialise(
        tf.data.Dataset.from_tensor_slices(test_ids).flat_map(
            test.serializable_dataset_fn),
        num_classes, f'split {test_split!r} in {path}')
  else:
    test_x, test_y = _empty_arrays()
  if len(test_y) == 0:  # pylint: disable=g-explicit-length-test
    raise DataError(
        f'federated EMNIST database {path}: the {len(client_ids)} kept '
        f'writers have no examples in split {test_split!r}')
  return federated_data.FederatedData(
      name='emnist',
      input_shape=INPUT_SHAPE,
      num_classes=num_classes,
      client_ids=tuple(client_ids),
      get_client=get_client,
      test_x=test_x,
      test_y=test_y,
      client_sizes={c: counts[c] for c in client_ids},
  )
