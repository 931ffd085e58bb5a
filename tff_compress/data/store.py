"""The client-data store remote TFF workers build client datasets from.

With remote workers (`runtime.workers`), the driver never ships a dataset:
every round it sends each sampled client's *descriptor* (client index and
shuffle seed, a dozen bytes) -- or with cohort execution each cohort's
(its clients' indices, seeds and slots) -- and the worker builds the
client's ``tf.data.Dataset`` itself, inside the computation it runs, from a
**client-data store** on its own disk.

Store layout (under a worker's ``--data_dir``; the driver writes the same
layout under ``runtime.worker_data_dir``)::

  client_data/<fingerprint>/
    manifest.json    format, fingerprint, shapes, client ids, sizes
    fingerprint      the fingerprint alone (read by the workers' check)
    train/<k>.x      shard k: float32 little-endian rows
                     ``[rows, *input_shape]`` of whole clients, in client-id
                     order, about :data:`SHARD_BYTES` each (a larger client
                     alone)
    train/<k>.y      int32 labels of the same rows
    train.index      int64 ``[num_clients, 3]``: client ``i``'s shard and
                     its rows ``[start, stop)`` in that shard
    test.x, test.y   the test split, same encodings, one file

Shards exist because reading a row range skips the bytes before it by
reading them (`tf.data.FixedLengthRecordDataset`'s header): in one file of
a 100,000-client store (2.4 GB) a client's read cost up to a second; in a
shard it costs at most a shard's bytes.

``<fingerprint>`` is a SHA-256 prefix of the exact bytes (client ids, every
client's arrays, the test split): a store is either the data the driver
would use or absent, never stale. The computations read the store through a
*relative* path, resolved against each worker process's working directory
(`tff_compress.worker` sets it to ``--data_dir``), so hosts may keep it in
different places.

A client's dataset on a worker is built with the same two functions as on the
driver (`federated_data.client_order` and `federated_data.batches_in_order`,
TensorFlow ops with a stateless Philox shuffle), from the same float32 bytes:
a run on remote workers sees exactly the batches a local run sees.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.data import federated_data

FORMAT = 2
SHARD_BYTES = 1 << 20
STORE_ROOT = 'client_data'
DEFAULT_DATA_DIR = '~/.cache/tff_compress/worker'
_X = np.dtype('<f4')
_Y = np.dtype('<i4')
_INDEX = np.dtype('<i8')


class StoreError(federated_data.DataError):
  """A client-data store is missing, unreadable or of other data."""


@dataclasses.dataclass(frozen=True)
class Store:
  """What the driver knows about a store (no arrays).

  Attributes:
    fingerprint: Hex SHA-256 prefix of the stored bytes.
    input_shape: Shape of one image.
    num_clients: Number of training clients (indices ``0..num_clients-1``
      in `FederatedData.client_ids` order).
    num_test: Number of test examples.
    path: The store directory on the driver's disk.
  """

  fingerprint: str
  input_shape: tuple[int, ...]
  num_clients: int
  num_test: int
  path: str

  @property
  def relative_dir(self) -> str:
    """The store as the workers' computations name it."""
    return f'{STORE_ROOT}/{self.fingerprint}'


def resolve_data_dir(data_dir: str) -> str:
  """`data_dir`, or :data:`DEFAULT_DATA_DIR` when empty, user-expanded."""
  return os.path.abspath(os.path.expanduser(data_dir or DEFAULT_DATA_DIR))


def fingerprint(data: federated_data.FederatedData) -> str:
  """SHA-256 (16 hex digits) of everything a store holds, in store order.

  Loads every client of `data` (they stay in its cache).
  """
  h = hashlib.sha256()
  h.update(json.dumps([FORMAT, list(data.input_shape), data.num_classes,
                       list(data.client_ids)]).encode())
  for cid in data.client_ids:
    x, y = data.client_arrays(cid)
    h.update(np.ascontiguousarray(x, _X).tobytes())
    h.update(np.ascontiguousarray(y, _Y).tobytes())
  h.update(np.ascontiguousarray(data.test_x, _X).tobytes())
  h.update(np.ascontiguousarray(data.test_y, _Y).tobytes())
  return h.hexdigest()[:16]


def _manifest(path: str) -> Optional[dict]:
  try:
    with open(os.path.join(path, 'manifest.json')) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _store_of(manifest: dict, path: str) -> Store:
  return Store(manifest['fingerprint'], tuple(manifest['input_shape']),
               len(manifest['client_ids']), manifest['num_test'], path)


def _write_shards(data: federated_data.FederatedData,
                  directory: str) -> np.ndarray:
  """Writes the clients' rows as shards ``<directory>/<k>.x|y``.

  Returns:
    The index, int64 ``[num_clients, 3]``: (shard, start, stop) rows.
  """
  os.makedirs(directory)
  index = np.zeros((len(data.client_ids), 3), _INDEX)
  shard, rows, xs, ys = 0, 0, [], []

  def flush():
    with open(os.path.join(directory, f'{shard}.x'), 'wb') as f:
      f.write(b''.join(xs))
    with open(os.path.join(directory, f'{shard}.y'), 'wb') as f:
      f.write(b''.join(ys))

  for i, cid in enumerate(data.client_ids):
    x, y = data.client_arrays(cid)
    if rows and (rows + len(y)) * _X.itemsize * int(
        np.prod(data.input_shape)) > SHARD_BYTES:
      flush()
      shard, rows, xs, ys = shard + 1, 0, [], []
    xs.append(np.ascontiguousarray(x, _X).tobytes())
    ys.append(np.ascontiguousarray(y, _Y).tobytes())
    index[i] = shard, rows, rows + len(y)
    rows += len(y)
  if xs:
    flush()
  return index


def prepare_store(data: federated_data.FederatedData, data_dir: str) -> Store:
  """Writes `data`'s store under `data_dir` unless it is already there.

  The store is written to a temporary directory and renamed into place, so a
  reader never sees a partial store; concurrent writers of the same data
  produce the same bytes.

  Args:
    data: The federated dataset of the run.
    data_dir: Directory holding ``client_data/`` (a worker's ``--data_dir``
      or a shared filesystem path).

  Returns:
    The store's description.
  """
  fp = fingerprint(data)
  root = os.path.join(data_dir, STORE_ROOT)
  path = os.path.join(root, fp)
  manifest = _manifest(path)
  if manifest is not None and manifest.get('fingerprint') == fp:
    return _store_of(manifest, path)
  os.makedirs(root, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{fp}-', dir=root)
  try:
    index = _write_shards(data, os.path.join(tmp, 'train'))
    index.tofile(os.path.join(tmp, 'train.index'))
    np.ascontiguousarray(data.test_x, _X).tofile(os.path.join(tmp, 'test.x'))
    np.ascontiguousarray(data.test_y, _Y).tofile(os.path.join(tmp, 'test.y'))
    manifest = {
        'format': FORMAT,
        'fingerprint': fp,
        'dataset': data.name,
        'input_shape': list(data.input_shape),
        'num_classes': data.num_classes,
        'client_ids': list(data.client_ids),
        'num_train': int((index[:, 2] - index[:, 1]).sum()),
        'num_shards': int(index[-1, 0]) + 1 if len(index) else 0,
        'num_test': int(len(data.test_y)),
    }
    with open(os.path.join(tmp, 'manifest.json'), 'w') as f:
      json.dump(manifest, f)
    with open(os.path.join(tmp, 'fingerprint'), 'w') as f:
      f.write(fp)
    os.chmod(tmp, 0o755)
    try:
      os.rename(tmp, path)
    except OSError:  # another writer won the race with the same bytes
      if _manifest(path) is None:
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return _store_of(manifest, path)


# ---------------------------------------------------------------------------
# TensorFlow side: runs inside the computations on the workers.


def _read_rows(prefix, input_shape: Sequence[int], starts, stops):
  """Rows ``[starts[i], stops[i])`` of ``<prefix[i]>.x`` / ``.y``,
  concatenated in the order of the ranges.

  Args:
    prefix: string tensor ``[n]`` (or one string for all ranges): the files
      of each range, without their ``.x`` / ``.y`` suffix.
    input_shape: Shape of one row.
    starts: int64 ``[n]``.
    stops: int64 ``[n]``.

  Reads only those rows of each file (after skipping the bytes before
  them, see the store layout).
  """
  x_bytes = _X.itemsize * int(np.prod(input_shape))
  total = tf.reduce_sum(stops - starts)
  prefix = tf.broadcast_to(prefix, tf.shape(starts))

  def rows(suffix, record_bytes, dtype):
    ds = tf.data.Dataset.from_tensor_slices((prefix, starts, stops)).flat_map(
        lambda p, a, b: tf.data.FixedLengthRecordDataset(
            p + suffix, record_bytes, header_bytes=a * record_bytes).take(
                b - a))
    return tf.io.decode_raw(
        ds.batch(tf.maximum(total, 1)).get_single_element(), dtype)

  x = tf.reshape(rows('.x', x_bytes, tf.float32), [-1, *input_shape])
  y = tf.reshape(rows('.y', _Y.itemsize, tf.int32), [-1])
  return x, y


def client_rows(store: Store, clients):
  """The rows of clients `clients` (int tensor ``[G]``), concatenated.

  Returns:
    ``(x [sum n_g, ...], y [sum n_g], sizes int64 [G])``: client
    ``clients[0]``'s rows, then ``clients[1]``'s, ...
  """
  index = tf.reshape(tf.io.decode_raw(
      tf.io.read_file(f'{store.relative_dir}/train.index'), tf.int64),
                     [-1, 3])
  shard, starts, stops = tf.unstack(
      tf.gather(index, tf.cast(clients, tf.int64)), axis=1)
  x, y = _read_rows(
      tf.strings.join([f'{store.relative_dir}/train/',
                       tf.strings.as_string(shard)]),
      store.input_shape, starts, stops)
  return x, y, stops - starts


def train_dataset(store: Store, client, shuffle_seed, *, batch_size: int,
                  epochs: int) -> tf.data.Dataset:
  """Client `client`'s training batches, as `make_client_dataset` makes them.

  Args:
    store: The store (its relative path is resolved on the worker).
    client: int32 scalar tensor, the client's index in `client_ids` order.
    shuffle_seed: int64 scalar tensor.
    batch_size: Examples per batch.
    epochs: Passes over the client's data.

  Returns:
    ``ceil(epochs * n / batch_size)`` batches of ``OrderedDict(x, y)``.
  """
  x, y, sizes = client_rows(store, tf.reshape(client, [1]))
  order = federated_data.client_order(sizes[0], epochs, shuffle_seed)
  return federated_data.batches_in_order(x, y, order, batch_size)


def eval_dataset(store: Store, start, stop, *, batch_size: int
                 ) -> tf.data.Dataset:
  """Test rows ``[start, stop)`` in order, in batches of `batch_size`."""
  x, y = _read_rows(f'{store.relative_dir}/test', store.input_shape,
                    tf.reshape(tf.cast(start, tf.int64), [1]),
                    tf.reshape(tf.cast(stop, tf.int64), [1]))
  return tf.data.Dataset.from_tensor_slices(
      collections.OrderedDict(x=x, y=y)).batch(batch_size)


# ---------------------------------------------------------------------------
# Descriptors and the composed computations (driver side).

TRAIN_DESCRIPTOR = collections.OrderedDict(
    client=tff.TensorType(np.int32), shuffle_seed=tff.TensorType(np.int64),
    batches=tff.TensorType(np.int32))


def cohort_descriptor_type(size: int) -> collections.OrderedDict:
  """What the driver sends for a cohort of `size` clients: each client's
  index, shuffle seed and slot in the round (16 bytes per client)."""
  return collections.OrderedDict(
      clients=tff.TensorType(np.int32, [size]),
      shuffle_seeds=tff.TensorType(np.int64, [size]),
      slots=tff.TensorType(np.int32, [size]))


EVAL_DESCRIPTOR = collections.OrderedDict(
    start=tff.TensorType(np.int64), stop=tff.TensorType(np.int64))


class TrainDescriptor(collections.OrderedDict):
  """What the driver sends for one sampled client instead of its dataset.

  Fields: ``client`` (int32 index in `client_ids` order), ``shuffle_seed``
  (int64) and ``batches`` (int32, -1 = all): 16 bytes of values. Like the
  dataset it stands for, it supports ``take(n)`` (the first n batches).
  """

  def take(self, count: int) -> 'TrainDescriptor':
    return TrainDescriptor(self, batches=np.int32(count))


def train_descriptor(client: int, shuffle_seed: int) -> TrainDescriptor:
  return TrainDescriptor(client=np.int32(client),
                         shuffle_seed=np.int64(shuffle_seed),
                         batches=np.int32(-1))


def cohort_descriptor(clients: Sequence[int], shuffle_seeds: Sequence[int],
                      slots: Sequence[int]) -> collections.OrderedDict:
  """A cohort's descriptor (`cohort_descriptor_type`)."""
  return collections.OrderedDict(
      clients=np.asarray(clients, np.int32),
      shuffle_seeds=np.asarray(shuffle_seeds, np.int64),
      slots=np.asarray(slots, np.int32))


def eval_descriptor(start: int, stop: int) -> collections.OrderedDict:
  return collections.OrderedDict(start=np.int64(start), stop=np.int64(stop))
