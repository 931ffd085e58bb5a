"""Client data built on remote TFF workers from client ids.

With remote workers (`runtime.workers`), the driver never ships a dataset:
every round it sends each sampled client's *descriptor* (client index and
shuffle seed, a dozen bytes) and the worker builds the client's
``tf.data.Dataset`` itself, inside the computation it runs, from a
**client-data store** on its own disk.

Store layout (under a worker's ``--data_dir``; the driver writes the same
layout under ``runtime.worker_data_dir``)::

  client_data/<fingerprint>/
    manifest.json    format, fingerprint, shapes, client ids, sizes
    fingerprint      the fingerprint alone (read by the workers' check)
    train.x          float32 little-endian rows ``[n_train, *input_shape]``,
                     the clients' examples concatenated in client-id order
    train.y          int32 labels ``[n_train]``
    train.offsets    int64 ``[num_clients + 1]``: client ``i`` owns rows
                     ``offsets[i]:offsets[i + 1]``
    test.x, test.y   the test split, same encodings

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
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.data import federated_data

FORMAT = 1
STORE_ROOT = 'client_data'
DEFAULT_DATA_DIR = '~/.cache/tff_compress/worker'
_X = np.dtype('<f4')
_Y = np.dtype('<i4')
_OFFSETS = np.dtype('<i8')


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
    sizes = []
    with open(os.path.join(tmp, 'train.x'), 'wb') as fx, \
        open(os.path.join(tmp, 'train.y'), 'wb') as fy:
      for cid in data.client_ids:
        x, y = data.client_arrays(cid)
        fx.write(np.ascontiguousarray(x, _X).tobytes())
        fy.write(np.ascontiguousarray(y, _Y).tobytes())
        sizes.append(len(y))
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(_OFFSETS)
    offsets.tofile(os.path.join(tmp, 'train.offsets'))
    np.ascontiguousarray(data.test_x, _X).tofile(os.path.join(tmp, 'test.x'))
    np.ascontiguousarray(data.test_y, _Y).tofile(os.path.join(tmp, 'test.y'))
    manifest = {
        'format': FORMAT,
        'fingerprint': fp,
        'dataset': data.name,
        'input_shape': list(data.input_shape),
        'num_classes': data.num_classes,
        'client_ids': list(data.client_ids),
        'num_train': int(offsets[-1]),
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


def _read_rows(prefix: str, input_shape: Sequence[int], start, stop):
  """Rows ``[start, stop)`` of ``<prefix>.x`` / ``<prefix>.y`` (tensors).

  Reads only those rows: the fixed-size records are addressed by skipping
  ``start`` records' bytes as a header.
  """
  x_bytes = _X.itemsize * int(np.prod(input_shape))

  def rows(path, record_bytes, dtype):
    ds = tf.data.FixedLengthRecordDataset(
        path, record_bytes, header_bytes=start * record_bytes)
    ds = ds.take(stop - start).batch(tf.maximum(stop - start, 1))
    return tf.io.decode_raw(ds.get_single_element(), dtype)

  x = tf.reshape(rows(prefix + '.x', x_bytes, tf.float32),
                 [-1, *input_shape])
  y = tf.reshape(rows(prefix + '.y', _Y.itemsize, tf.int32), [-1])
  return x, y


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
  offsets = tf.io.decode_raw(
      tf.io.read_file(f'{store.relative_dir}/train.offsets'), tf.int64)
  client = tf.cast(client, tf.int64)
  start, stop = offsets[client], offsets[client + 1]
  x, y = _read_rows(f'{store.relative_dir}/train', store.input_shape,
                    start, stop)
  order = federated_data.client_order(stop - start, epochs, shuffle_seed)
  return federated_data.batches_in_order(x, y, order, batch_size)


def eval_dataset(store: Store, start, stop, *, batch_size: int
                 ) -> tf.data.Dataset:
  """Test rows ``[start, stop)`` in order, in batches of `batch_size`."""
  x, y = _read_rows(f'{store.relative_dir}/test', store.input_shape,
                    tf.cast(start, tf.int64), tf.cast(stop, tf.int64))
  return tf.data.Dataset.from_tensor_slices(
      collections.OrderedDict(x=x, y=y)).batch(batch_size)


def eval_bounds(num_test: int, num_clients: int) -> list[tuple[int, int]]:
  """The test split cut into ``min(num_clients, num_test)`` contiguous slices.

  Returns:
    ``[(start, stop), ...]`` with ``stop - start`` differing by at most 1.
  """
  num = max(1, min(num_clients, num_test))
  bounds = np.linspace(0, num_test, num + 1).astype(int)
  return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


# ---------------------------------------------------------------------------
# Descriptors and the composed computations (driver side).

TRAIN_DESCRIPTOR = collections.OrderedDict(
    client=tff.TensorType(np.int32), shuffle_seed=tff.TensorType(np.int64),
    batches=tff.TensorType(np.int32))
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


def eval_descriptor(start: int, stop: int) -> collections.OrderedDict:
  return collections.OrderedDict(start=np.int64(start), stop=np.int64(stop))


def _is_example_sequence(type_spec) -> bool:
  """A sequence of ``<x=float32[?,...], y=int32[?]>`` batches (client data)."""
  if not isinstance(type_spec, tff.SequenceType):
    return False
  element = type_spec.element
  if not isinstance(element, tff.StructType):
    return False
  names = [name for name, _ in tff.structure.iter_elements(element)]
  return names == ['x', 'y']


def _replace_sequences(type_spec, descriptor_type):
  """`type_spec` with every example sequence replaced by `descriptor_type`.

  Other sequences (e.g. the one-element fault-code datasets of
  `faults.client_work`) stay: the driver sends those few bytes itself.
  """
  if _is_example_sequence(type_spec):
    return tff.to_type(descriptor_type)
  if isinstance(type_spec, tff.StructType):
    return tff.StructType([
        (name, _replace_sequences(member, descriptor_type))
        for name, member in tff.structure.iter_elements(type_spec)])
  return type_spec


def _build_sequences(value, type_spec, make_dataset: Callable):
  """Rebuilds `value` (of the descriptor type) with datasets made on the fly."""
  if _is_example_sequence(type_spec):
    if isinstance(value, tff.structure.Struct):
      value = tff.structure.to_odict(value)
    return make_dataset(value)
  if isinstance(type_spec, tff.StructType):
    members = list(tff.structure.iter_elements(type_spec))
    if isinstance(value, tff.structure.Struct):
      values = [v for _, v in tff.structure.iter_elements(value)]
    elif isinstance(value, dict):
      values = [value[name] for name, _ in members]
    else:
      values = list(value)
    built = [(name, _build_sequences(v, member, make_dataset))
             for (name, member), v in zip(members, values)]
    if all(name for name, _ in built):
      return collections.OrderedDict(built)
    return [v for _, v in built]
  return value


def compose(next_fn: tff.Computation, descriptor_type,
            make_dataset: Callable) -> tff.Computation:
  """`next_fn(state, client_data)` fed by datasets built on the clients.

  Args:
    next_fn: A computation ``(state@SERVER, {C}@CLIENTS) -> ...`` whose
      client data type ``C`` holds sequences of ``<x, y>`` batches, possibly
      inside structs (Federated Dropout's ``<key, data>``, fault codes).
    descriptor_type: The type that replaces each such sequence in ``C``.
    make_dataset: Traced inside a TensorFlow computation: descriptor
      (tensors) -> ``tf.data.Dataset`` of ``C``'s element type.

  Returns:
    ``(state@SERVER, {D}@CLIENTS) -> next_fn's result``, where ``D`` is ``C``
    with descriptors instead of example datasets. The datasets are built by
    a ``federated_map`` at CLIENTS, i.e. on the worker that runs the client.
  """
  state_type, data_type = next_fn.type_signature.parameter
  client_type = data_type.member
  desc_type = _replace_sequences(client_type, descriptor_type)

  @tff.tensorflow.computation(desc_type)
  def build(descriptors):
    return _build_sequences(descriptors, client_type, make_dataset)

  @tff.federated_computation(state_type, tff.FederatedType(desc_type,
                                                           tff.CLIENTS))
  def next_from_descriptors(state, descriptors):
    return next_fn(state, tff.federated_map(build, descriptors))

  return next_from_descriptors


def training_next(next_fn: tff.Computation, store: Store, *,
                  batch_size: int, epochs: int) -> tff.Computation:
  """A training `next` taking :class:`TrainDescriptor` s, not datasets."""

  def make(d):
    return train_dataset(store, d['client'], d['shuffle_seed'],
                         batch_size=batch_size, epochs=epochs).take(
                             tf.cast(d['batches'], tf.int64))

  return compose(next_fn, TRAIN_DESCRIPTOR, make)


def evaluation_next(next_fn: tff.Computation, store: Store, *,
                    batch_size: int) -> tff.Computation:
  """An evaluation `next` taking :func:`eval_descriptor` s."""

  def make(d):
    return eval_dataset(store, d['start'], d['stop'], batch_size=batch_size)

  return compose(next_fn, EVAL_DESCRIPTOR, make)


def fingerprint_reader(store: Store) -> tff.Computation:
  """A computation returning the fingerprint file of `store` on its executor.

  It fails (file not found) on a worker that lacks the store.
  """

  @tff.tensorflow.computation()
  def read():
    return tf.io.read_file(f'{store.relative_dir}/fingerprint')

  return read


class _Process:
  """A learning process whose `next` takes descriptors instead of datasets."""

  def __init__(self, process, next_fn):
    self._process = process
    self._next = next_fn

  def next(self, state, client_data):
    # The composed computation (and a split across workers) returns the
    # right fields but plain containers; restore the Python classes of the
    # original result (LearningProcessOutput, the state's attrs classes, ...)
    # so that e.g. checkpoints keep one structure.
    # pylint: disable=g-import-not-at-top
    from tensorflow_federated.python.core.impl.types import type_conversions
    # pylint: enable=g-import-not-at-top
    result = self._next(state, client_data)
    return type_conversions.type_to_py_container(
        tff.structure.from_container(result, recursive=True),
        self._process.next.type_signature.result)

  def __getattr__(self, name):
    return getattr(self._process, name)


@dataclasses.dataclass(frozen=True)
class WorkerFeed:
  """Training and evaluation fed with client data built on the workers.

  Attributes:
    training: The run's `learning.process.Training` whose ``process.next``
      takes one :class:`TrainDescriptor` per client where it took a dataset
      (its `client_inputs` wraps descriptors exactly as it wraps datasets).
    evaluation: The federated evaluation process, ``next`` taking
      :attr:`eval_descriptors`.
    eval_descriptors: The evaluation clients: contiguous slices of the test
      split, as `eval_bounds` cuts them.
  """

  training: object
  evaluation: object
  eval_descriptors: list

  @classmethod
  def build(cls, training, evaluation, store: Store, *, batch_size: int,
            epochs: int, eval_clients: int,
            eval_batch_size: int) -> 'WorkerFeed':
    """Composes the processes of a run with the worker-side builders."""
    train_next = training_next(training.process.next, store,
                               batch_size=batch_size, epochs=epochs)
    eval_next = evaluation_next(evaluation.next, store,
                                batch_size=eval_batch_size)
    return cls(
        training=dataclasses.replace(
            training, process=_Process(training.process, train_next)),
        evaluation=_Process(evaluation, eval_next),
        eval_descriptors=[eval_descriptor(a, b) for a, b in
                          eval_bounds(store.num_test, eval_clients)])


def check_workers(cluster, store: Store) -> None:
  """Raises StoreError naming each worker that cannot read `store`.

  Args:
    cluster: A connected `runtime.Cluster`.
    store: The store the run's computations will read.
  """
  from tff_compress import runtime  # pylint: disable=g-import-not-at-top
  read = fingerprint_reader(store)
  missing = []
  for worker in cluster.workers:
    try:
      got = cluster.run_on(worker, read)
    except runtime.WorkerUnavailableError:
      raise
    except Exception:  # pylint: disable=broad-except
      missing.append(worker.target)
      continue
    if got != store.fingerprint.encode():
      missing.append(worker.target)
  if missing:
    raise StoreError(
        f'TFF worker{"s" if len(missing) > 1 else ""} {", ".join(missing)} '
        f'cannot read this run\'s client data ({store.relative_dir}/ under '
        'its --data_dir): share this driver\'s runtime.worker_data_dir '
        f'({os.path.dirname(os.path.dirname(store.path))}) with it as '
        '--data_dir, or restart it with --config=<this run\'s config> to '
        'prepare the data there')
