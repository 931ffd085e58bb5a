"""Client-data stores (`data/store.py`) and the processes fed with datasets the
TFF workers build from descriptors (`runtime/feed.py`)."""

from __future__ import annotations

import collections
import os
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.cohorts import data as cohort_data
from tff_compress.data import federated_data
from tff_compress.data import store as store_lib
from tff_compress.runtime import feed
from tff_compress.runtime import local as local_runtime

_SHAPE = (4, 3, 1)


def _data(sizes=(7, 1, 12, 5), seed=0, name='toy'):
  rng = np.random.default_rng(seed)
  arrays = {f'client_{i:04d}': (rng.random((n,) + _SHAPE, dtype=np.float32),
                                rng.integers(0, 3, n).astype(np.int32))
            for i, n in enumerate(sizes)}
  test_x = rng.random((23,) + _SHAPE, dtype=np.float32)
  test_y = rng.integers(0, 3, 23).astype(np.int32)
  return federated_data.FederatedData(
      name=name, input_shape=_SHAPE, num_classes=3,
      client_ids=tuple(arrays), get_client=arrays.__getitem__,
      test_x=test_x, test_y=test_y)


def _batches(ds):
  return [(b['x'].numpy() if hasattr(b['x'], 'numpy') else b['x'],
           b['y'].numpy() if hasattr(b['y'], 'numpy') else b['y'])
          for b in ds]


class StoreTest(absltest.TestCase):

  def test_store_holds_the_exact_bytes_and_is_reused(self):
    data = _data()
    root = self.create_tempdir().full_path
    store = store_lib.prepare_store(data, root)
    self.assertEqual(store.num_clients, 4)
    self.assertEqual(store.num_test, 23)
    self.assertEqual(store.path,
                     os.path.join(root, 'client_data', store.fingerprint))
    index = np.fromfile(os.path.join(store.path, 'train.index'),
                        '<i8').reshape(-1, 3)
    # 12 small clients fit one shard.
    np.testing.assert_array_equal(index, [[0, 0, 7], [0, 7, 8], [0, 8, 20],
                                          [0, 20, 25]])
    self._assert_shards_hold_the_clients(store, data, index)
    with open(os.path.join(store.path, 'fingerprint')) as f:
      self.assertEqual(f.read(), store.fingerprint)
    # Same data: same directory, not rewritten; no temporary leftovers.
    mtime = os.stat(os.path.join(store.path, 'train.index')).st_mtime_ns
    self.assertEqual(store_lib.prepare_store(_data(), root), store)
    self.assertEqual(
        os.stat(os.path.join(store.path, 'train.index')).st_mtime_ns, mtime)
    self.assertEqual(os.listdir(os.path.join(root, 'client_data')),
                     [store.fingerprint])

  def _assert_shards_hold_the_clients(self, store, data, index):
    for i, cid in enumerate(data.client_ids):
      shard, start, stop = index[i]
      prefix = os.path.join(store.path, 'train', str(shard))
      x = np.fromfile(prefix + '.x', '<f4').reshape((-1,) + _SHAPE)
      y = np.fromfile(prefix + '.y', '<i4')
      cx, cy = data.client_arrays(cid)
      np.testing.assert_array_equal(x[start:stop], cx)
      np.testing.assert_array_equal(y[start:stop], cy)

  def test_shards_hold_whole_clients_up_to_the_shard_size(self):
    # 48 bytes per row, shards of 480: clients (7, 1, 12, 5) -> shard 0
    # holds 7 + 1 rows, the 12-row client is alone (larger than a shard).
    data = _data()
    with mock.patch.object(store_lib, 'SHARD_BYTES', 480):
      store = store_lib.prepare_store(data, self.create_tempdir().full_path)
    index = np.fromfile(os.path.join(store.path, 'train.index'),
                        '<i8').reshape(-1, 3)
    np.testing.assert_array_equal(index, [[0, 0, 7], [0, 7, 8], [1, 0, 12],
                                          [2, 0, 5]])
    self.assertLen(os.listdir(os.path.join(store.path, 'train')), 6)
    self._assert_shards_hold_the_clients(store, data, index)

  def test_fingerprint_changes_with_any_byte(self):
    base = store_lib.fingerprint(_data())
    self.assertEqual(base, store_lib.fingerprint(_data()))
    self.assertNotEqual(base, store_lib.fingerprint(_data(seed=1)))
    self.assertNotEqual(base, store_lib.fingerprint(_data(sizes=(7, 1, 12))))
    changed = _data()
    changed.client_arrays('client_0002')[0][3, 1, 1, 0] += 1e-7
    self.assertNotEqual(base, store_lib.fingerprint(changed))

  def test_eval_bounds_cover_the_test_split(self):
    self.assertEqual(federated_data.eval_bounds(10, 3), [(0, 3), (3, 6), (6, 10)])
    self.assertEqual(federated_data.eval_bounds(2, 5), [(0, 1), (1, 2)])
    self.assertEqual(federated_data.eval_bounds(7, 1), [(0, 7)])

  def test_descriptor_take_mimics_the_dataset(self):
    d = store_lib.train_descriptor(3, 99)
    self.assertEqual(list(d), ['client', 'shuffle_seed', 'batches'])
    self.assertEqual(int(d['batches']), -1)
    empty = d.take(0)
    self.assertEqual(int(empty['batches']), 0)
    self.assertEqual(int(empty['client']), 3)
    self.assertEqual(int(d['batches']), -1)  # the original is unchanged


class WorkerBuiltDatasetsTest(parameterized.TestCase):
  """The datasets built by a TFF worker equal the driver's, batch by batch."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data = _data()
    cls.root = absltest.get_default_test_tmpdir()
    # Small shards: a worker reads clients from several (clients 0 and 1
    # share shard 0, 2 and 3 are alone).
    with mock.patch.object(store_lib, 'SHARD_BYTES', 480):
      cls.store = store_lib.prepare_store(cls.data, cls.root)
    # The computations name the store relative to the worker's working
    # directory; the managed local worker inherits ours.
    cls._cwd = os.getcwd()
    os.chdir(cls.root)

  @classmethod
  def tearDownClass(cls):
    os.chdir(cls._cwd)
    super().tearDownClass()

  def test_training_datasets_equal_make_client_dataset(self):
    cases = [(0, 5, 3, 1, -1), (2, 77, 5, 2, -1), (1, 0, 4, 3, -1),
             (3, 2**31 - 2, 2, 1, 2), (2, 8, 5, 1, 0)]

    def builder(batch, epochs):

      @tff.tensorflow.computation(tff.to_type(store_lib.TRAIN_DESCRIPTOR))
      def build(d):
        return store_lib.train_dataset(
            self.store, d['client'], d['shuffle_seed'],
            batch_size=batch, epochs=epochs).take(
                tf.cast(d['batches'], tf.int64))

      return build

    with local_runtime.local_context():
      got = []
      for client, seed, batch, epochs, limit in cases:
        d = store_lib.train_descriptor(client, seed)
        if limit >= 0:
          d = d.take(limit)
        got.append(_batches(builder(batch, epochs)(d)))
    for (client, seed, batch, epochs, limit), batches in zip(cases, got):
      x, y = self.data.client_arrays(self.data.client_ids[client])
      ds = federated_data.make_client_dataset(
          x, y, batch_size=batch, epochs=epochs, shuffle_seed=seed)
      want = _batches(ds.take(limit))
      self.assertLen(batches, len(want))
      for (gx, gy), (wx, wy) in zip(batches, want):
        np.testing.assert_array_equal(gx, wx)
        np.testing.assert_array_equal(gy, wy)

  def test_cohort_steps_equal_the_drivers_stacking(self):
    # A worker's cohort (rows read from its store) is the driver's cohort
    # of the same clients, seeds and slots: same steps, same padding.
    cases = [([2, 0, 3], [5, 77, 0], [4, 1, 2], 5, 2),
             ([1, 1, 2], [3, 3, 9], [0, 2, 1], 4, 1),
             ([0, 3, 2], [2**31 - 2, 1, 8], [7, 6, 5], 20, 3)]

    def builder(batch, epochs):

      @tff.tensorflow.computation(tff.to_type(
          store_lib.cohort_descriptor_type(3)))
      def build(d):
        x, y, sizes = store_lib.client_rows(self.store, d['clients'])
        return tf.data.Dataset.from_tensor_slices(cohort_data.stack_rows(
            x, y, sizes, d['shuffle_seeds'], d['slots'], batch_size=batch,
            epochs=epochs))

      return build

    with local_runtime.local_context():
      got = [list(builder(b, e)(store_lib.cohort_descriptor(c, s, slots)))
             for c, s, slots, b, e in cases]
    for (clients, seeds, slots, b, e), steps in zip(cases, got):
      want = cohort_data.stack_clients(
          [(*self.data.client_arrays(self.data.client_ids[c]), s)
           for c, s in zip(clients, seeds)], batch_size=b, epochs=e,
          slots=slots)
      self.assertLen(steps, len(want['x']))
      for key, value in want.items():
        np.testing.assert_array_equal(
            np.stack([np.asarray(step[key]) for step in steps]), value, key)
      # Every client's examples are visited E times, nothing else.
      self.assertEqual(want['mask'].sum(), e * sum(
          self.data.client_size(self.data.client_ids[c]) for c in clients))

  def test_eval_datasets_are_the_test_slices(self):

    @tff.tensorflow.computation(tff.to_type(store_lib.EVAL_DESCRIPTOR))
    def build(d):
      return store_lib.eval_dataset(self.store, d['start'], d['stop'],
                                    batch_size=4)

    with local_runtime.local_context():
      got = [_batches(build(store_lib.eval_descriptor(a, b)))
             for a, b in [(0, 9), (9, 10), (10, 23)]]
    for (a, b), batches in zip([(0, 9), (9, 10), (10, 23)], got):
      self.assertEqual([len(by) for _, by in batches],
                       [min(4, b - a - i) for i in range(0, b - a, 4)])
      np.testing.assert_array_equal(np.concatenate([bx for bx, _ in batches]),
                                    self.data.test_x[a:b])
      np.testing.assert_array_equal(np.concatenate([by for _, by in batches]),
                                    self.data.test_y[a:b])

  def test_compose_feeds_structured_client_data(self):
    # A `next` whose client data is <key, data=sequence> (as with Federated
    # Dropout): the composed computation takes <key, data=descriptor>.
    element = collections.OrderedDict(
        x=tff.TensorType(np.float32, [None, *_SHAPE]),
        y=tff.TensorType(np.int32, [None]))
    client_type = tff.StructType([
        ('key', tff.TensorType(np.int32, [1])),
        ('data', tff.SequenceType(element))])

    @tff.tensorflow.computation(client_type)
    def label_sum(c):
      total = c['data'].reduce(np.int64(0), lambda a, b: a + tf.reduce_sum(
          tf.cast(b['y'], tf.int64)))
      return total * 1000 + tf.cast(c['key'][0], tf.int64)

    @tff.federated_computation(
        tff.FederatedType(np.int64, tff.SERVER),
        tff.FederatedType(client_type, tff.CLIENTS))
    def next_fn(state, clients):
      return state, tff.federated_sum(tff.federated_map(label_sum, clients))

    composed = feed.training_next(next_fn, self.store, batch_size=3,
                                       epochs=2)
    self.assertEqual(
        str(composed.type_signature.parameter[1].member),
        '<key=int32[1],data=<client=int32,shuffle_seed=int64,batches=int32>>')
    picked = [2, 0]
    descriptors = [collections.OrderedDict(
        key=np.array([slot], np.int32),
        data=store_lib.train_descriptor(c, 10 + c))
                   for slot, c in enumerate(picked)]
    with local_runtime.local_context():
      state, total = composed(np.int64(5), descriptors)
    self.assertEqual(state, 5)
    labels = sum(2 * int(self.data.client_arrays(
        self.data.client_ids[c])[1].sum()) for c in picked)
    self.assertEqual(total, labels * 1000 + 0 + 1)

  def test_compose_keeps_other_sequences(self):
    # Fault codes travel as one-element int32 datasets beside the examples
    # (faults/client_work.py): only the example sequence becomes a
    # descriptor; the code datasets are sent as they are.
    element = collections.OrderedDict(
        x=tff.TensorType(np.float32, [None, *_SHAPE]),
        y=tff.TensorType(np.int32, [None]))
    client_type = tff.StructType([
        ('fault', tff.SequenceType(tff.TensorType(np.int32))),
        ('data', tff.SequenceType(element))])

    @tff.tensorflow.computation(client_type)
    def examples_and_code(c):
      n = c['data'].reduce(np.int32(0), lambda a, b: a + tf.shape(b['y'])[0])
      code = c['fault'].reduce(np.int32(0), lambda a, b: a + b)
      return n * 10 + code

    @tff.federated_computation(
        tff.FederatedType(np.int32, tff.SERVER),
        tff.FederatedType(client_type, tff.CLIENTS))
    def next_fn(state, clients):
      return state, tff.federated_sum(
          tff.federated_map(examples_and_code, clients))

    composed = feed.training_next(next_fn, self.store, batch_size=4,
                                       epochs=1)
    self.assertEqual(
        str(composed.type_signature.parameter[1].member),
        '<fault=int32*,data=<client=int32,shuffle_seed=int64,batches=int32>>')
    clients = [collections.OrderedDict(
        fault=tf.data.Dataset.from_tensors(np.int32(code)),
        data=store_lib.train_descriptor(c, 1)) for c, code in [(0, 2), (3, 1)]]
    with local_runtime.local_context():
      _, total = composed(np.int32(0), clients)
    self.assertEqual(total, (7 + 5) * 10 + 3)

  def test_missing_store_fails_naming_the_file(self):
    missing = store_lib.Store('0' * 16, _SHAPE, 4, 23, '/nowhere')
    with local_runtime.local_context():
      self.assertEqual(feed.fingerprint_reader(self.store)(),
                       self.store.fingerprint.encode())
      with self.assertRaisesRegex(Exception,
                                  'client_data/0000000000000000/fingerprint'):
        feed.fingerprint_reader(missing)()


if __name__ == '__main__':
  absltest.main()
