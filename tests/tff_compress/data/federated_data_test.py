"""FederatedData checks/caching and the per-client tf.data pipeline."""

from __future__ import annotations

import collections

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from tff_compress.data import federated_data

DataError = federated_data.DataError


def _arrays(n, seed=0, shape=(4, 4, 1)):
  rng = np.random.default_rng(seed)
  return (rng.random((n,) + shape, dtype=np.float32),
          rng.integers(0, 3, size=n).astype(np.int32))


def _data(sizes=(5, 3), loader=None, client_sizes=None, **overrides):
  ids = tuple(f'client_{i:04d}' for i in range(len(sizes)))
  arrays = {c: _arrays(n, seed=i) for i, (c, n) in enumerate(zip(ids, sizes))}
  calls = collections.Counter()

  def get_client(cid):
    calls[cid] += 1
    return arrays[cid]

  test_x, test_y = _arrays(4, seed=99)
  kwargs = dict(name='toy', input_shape=(4, 4, 1), num_classes=3,
                client_ids=ids, get_client=loader or get_client,
                test_x=test_x, test_y=test_y, client_sizes=client_sizes)
  kwargs.update(overrides)
  return federated_data.FederatedData(**kwargs), arrays, calls


def _collect(ds):
  xs, ys = [], []
  for batch in ds:
    xs.append(batch['x'].numpy())
    ys.append(batch['y'].numpy())
  return xs, ys


class FederatedDataTest(parameterized.TestCase):

  def test_client_arrays_are_loaded_once(self):
    data, arrays, calls = _data()
    x, y = data.client_arrays('client_0001')
    np.testing.assert_array_equal(x, arrays['client_0001'][0])
    np.testing.assert_array_equal(y, arrays['client_0001'][1])
    self.assertIs(data.client_arrays('client_0001')[0], x)
    self.assertEqual(calls['client_0001'], 1)
    self.assertEqual(data.client_size('client_0000'), 5)
    self.assertEqual(data.client_size('client_0001'), 3)

  def test_client_size_uses_known_sizes_without_loading(self):
    data, _, calls = _data(client_sizes={'client_0000': 5, 'client_0001': 3})
    self.assertEqual(data.client_size('client_0000'), 5)
    self.assertEqual(sum(calls.values()), 0)

  def test_unknown_client(self):
    data, _, _ = _data()
    with self.assertRaisesRegex(DataError, r"unknown client id 'nobody'"):
      data.client_arrays('nobody')
    data, _, _ = _data(client_sizes={'client_0000': 5, 'client_0001': 3})
    with self.assertRaisesRegex(DataError, r"unknown client id 'nobody'"):
      data.client_size('nobody')

  def test_label_histogram(self):
    data, arrays, _ = _data(sizes=(5, 3, 7))
    hist = data.label_histogram()
    self.assertEqual(hist.shape, (3, 3))
    for i, cid in enumerate(data.client_ids):
      np.testing.assert_array_equal(
          hist[i], np.bincount(arrays[cid][1], minlength=3))
    self.assertEqual(hist.sum(), 15)

  def test_repr_is_short(self):
    data, _, _ = _data()
    self.assertNotIn('client_0000', repr(data))
    self.assertIn("name='toy'", repr(data))

  @parameterized.named_parameters(
      ('wrong_dtype', lambda cid: (np.zeros((2, 4, 4, 1)),
                                   np.zeros(2, np.int32)), r'float32'),
      ('wrong_shape', lambda cid: (np.zeros((2, 4, 4), np.float32),
                                   np.zeros(2, np.int32)), r'shape'),
      ('empty', lambda cid: (np.zeros((0, 4, 4, 1), np.float32),
                             np.zeros(0, np.int32)), r'has no examples'),
      ('label_range', lambda cid: (np.zeros((2, 4, 4, 1), np.float32),
                                   np.array([0, 3], np.int32)),
       r'labels 0..3 are outside 0..2'),
      ('pixel_range', lambda cid: (np.full((2, 4, 4, 1), 255, np.float32),
                                   np.zeros(2, np.int32)),
       r'values 255.0..255.0 are outside \[0, 1\]'),
      ('nan', lambda cid: (np.full((2, 4, 4, 1), np.nan, np.float32),
                           np.zeros(2, np.int32)), r'non-finite'),
      ('one_nan', lambda cid: (np.where(np.arange(32).reshape(2, 4, 4, 1) == 5,
                                        np.nan, 0.5).astype(np.float32),
                               np.zeros(2, np.int32)), r'non-finite'),
  )
  def test_bad_loader_output(self, loader, message):
    data, _, _ = _data(loader=loader)
    with self.assertRaisesRegex(DataError, message):
      data.client_arrays('client_0000')

  def test_unbounded_features_accept_any_finite_value(self):
    x = np.array([[-7.5], [1e6]], np.float32)
    data, _, _ = _data(loader=lambda cid: (x, np.zeros(2, np.int32)),
                       input_shape=(1,), test_x=x, test_y=np.zeros(2, np.int32),
                       value_range=None)
    np.testing.assert_array_equal(data.client_arrays('client_0000')[0], x)

  @parameterized.parameters(np.inf, -np.inf, np.nan)
  def test_unbounded_features_must_be_finite(self, bad):
    x = np.array([[0.5], [bad]], np.float32)
    data, _, _ = _data(loader=lambda cid: (x, np.zeros(2, np.int32)),
                       input_shape=(1,), test_x=x[:1],
                       test_y=np.zeros(1, np.int32), value_range=None)
    with self.assertRaisesRegex(DataError, r"client 'client_0000': x has "
                                r'non-finite values'):
      data.client_arrays('client_0000')

  def test_declared_range_other_than_unit_interval(self):
    data, _, _ = _data(value_range=(-1, 1))
    self.assertEqual(data.value_range, (-1.0, 1.0))
    x = np.full((2, 4, 4, 1), -2, np.float32)
    data, _, _ = _data(loader=lambda cid: (x, np.zeros(2, np.int32)),
                       value_range=(-1, 1))
    with self.assertRaisesRegex(DataError,
                                r'values -2.0..-2.0 are outside \[-1, 1\]'):
      data.client_arrays('client_0000')

  def test_uncached_clients_are_reloaded_every_time(self):
    data, arrays, calls = _data(cache_clients=False)
    for _ in range(3):
      x, _ = data.client_arrays('client_0000')
      np.testing.assert_array_equal(x, arrays['client_0000'][0])
    self.assertEqual(calls['client_0000'], 3)
    # Sizes without client_sizes load each client once more, and keep none.
    np.testing.assert_array_equal(data.sizes(), [5, 3])
    self.assertEqual(calls['client_0000'], 4)

  def test_sizes_vector(self):
    data, _, calls = _data(sizes=(5, 3, 7),
                           client_sizes={'client_0000': 5, 'client_0001': 3,
                                         'client_0002': 7})
    sizes = data.sizes()
    np.testing.assert_array_equal(sizes, [5, 3, 7])
    self.assertEqual(sizes.dtype, np.int64)
    self.assertIs(data.sizes(), sizes)
    self.assertFalse(sizes.flags.writeable)
    self.assertEqual(sum(calls.values()), 0)

  def test_size_mismatch(self):
    data, _, _ = _data(client_sizes={'client_0000': 4, 'client_0001': 3})
    with self.assertRaisesRegex(DataError,
                                r'loaded 5 examples but 4 were expected'):
      data.client_arrays('client_0000')

  @parameterized.named_parameters(
      ('no_clients', dict(client_ids=()), r'has no clients'),
      ('unsorted', dict(client_ids=('b', 'a')), r'not sorted'),
      ('duplicates', dict(client_ids=('a', 'a')), r'not unique'),
      ('test_shape', dict(test_x=np.zeros((4, 28, 28, 1), np.float32)),
       r'test split: x has shape'),
      ('empty_test', dict(test_x=np.zeros((0, 4, 4, 1), np.float32),
                          test_y=np.zeros(0, np.int32)),
       r'test split is empty'),
      ('test_range', dict(test_x=np.full((4, 4, 4, 1), 2, np.float32)),
       r'test split: values 2.0..2.0 are outside \[0, 1\]'),
      ('inverted_range', dict(value_range=(1.0, 0.0)),
       r'value_range=\(1.0, 0.0\) must be finite'),
      ('infinite_range', dict(value_range=(0.0, np.inf)),
       r'value_range=\(0.0, inf\) must be finite'),
      ('three_bounds', dict(value_range=(0.0, 1.0, 2.0)),
       r'value_range=\(0.0, 1.0, 2.0\) must be finite \(low, high\)'),
  )
  def test_invalid_construction(self, overrides, message):
    with self.assertRaisesRegex(DataError, message):
      _data(**overrides)


class MakeClientDatasetTest(parameterized.TestCase):

  @parameterized.parameters(1, 3)
  def test_visiting_orders_of_many_clients_in_one_call(self, epochs):
    sizes, seeds = [3, 1, 17, 250, 40], [5, 9, 1, 77, 2**31 - 2]
    orders = federated_data.visiting_orders(sizes, epochs, seeds)
    self.assertLen(orders, len(sizes))
    for order, n, seed in zip(orders, sizes, seeds):
      np.testing.assert_array_equal(
          order, federated_data.visiting_order(n, epochs, seed))
      # every pass visits each row once
      np.testing.assert_array_equal(
          np.sort(order.reshape(epochs, n), axis=1),
          np.tile(np.arange(n), (epochs, 1)))
    self.assertEqual(federated_data.visiting_orders([], epochs, []), [])

  def test_element_spec(self):
    spec = federated_data.element_spec((28, 28, 1))
    self.assertEqual(list(spec), ['x', 'y'])
    self.assertEqual(spec['x'], tf.TensorSpec([None, 28, 28, 1], tf.float32))
    self.assertEqual(spec['y'], tf.TensorSpec([None], tf.int32))

  @parameterized.parameters((10, 3, 1), (10, 3, 2), (7, 7, 3), (5, 8, 2))
  def test_batches_and_epochs(self, n, batch_size, epochs):
    x, y = _arrays(n)
    ds = federated_data.make_client_dataset(
        x, y, batch_size=batch_size, epochs=epochs, shuffle_seed=1)
    self.assertEqual(ds.element_spec, federated_data.element_spec((4, 4, 1)))
    xs, ys = _collect(ds)
    total = epochs * n
    self.assertLen(ys, -(-total // batch_size))
    self.assertTrue(all(len(b) == batch_size for b in ys[:-1]))
    self.assertEqual(sum(len(b) for b in ys), total)
    for xb, yb in zip(xs, ys):
      self.assertEqual(xb.dtype, np.float32)
      self.assertEqual(yb.dtype, np.int32)
      self.assertEqual(xb.shape[1:], (4, 4, 1))
    # Every pass visits every example exactly once, and x stays paired with y.
    flat_x = np.concatenate(xs)
    flat_y = np.concatenate(ys)
    for e in range(epochs):
      chunk = flat_x[e * n:(e + 1) * n].reshape(n, -1)
      order = [int(np.argmin(np.abs(x.reshape(n, -1) - row).sum(axis=1)))
               for row in chunk]
      self.assertEqual(sorted(order), list(range(n)))
      np.testing.assert_array_equal(flat_y[e * n:(e + 1) * n], y[order])

  def test_deterministic_for_a_seed_and_reshuffled_per_epoch(self):
    x, y = _arrays(50)
    y = np.arange(50, dtype=np.int32)  # Labels identify the examples.

    def labels(seed):
      ds = federated_data.make_client_dataset(
          x, y, batch_size=50, epochs=2, shuffle_seed=seed)
      return np.concatenate(_collect(ds)[1])

    first, again, other = labels(4), labels(4), labels(5)
    np.testing.assert_array_equal(first, again)
    self.assertFalse(np.array_equal(first, other))
    self.assertFalse(np.array_equal(first[:50], first[50:]))
    self.assertFalse(np.array_equal(first[:50], y))
    # Iterating the same dataset twice gives the same order.
    ds = federated_data.make_client_dataset(
        x, y, batch_size=50, epochs=2, shuffle_seed=4)
    np.testing.assert_array_equal(np.concatenate(_collect(ds)[1]),
                                  np.concatenate(_collect(ds)[1]))

  @parameterized.parameters((1, 1, 1), (10, 3, 1), (10, 3, 2), (7, 7, 3),
                            (5, 8, 2), (13, 4, 3))
  def test_same_batches_as_the_in_graph_builder(self, n, batch_size, epochs):
    # Remote workers build client data with batches_in_order
    # (runtime/feed.py); a run must see the same batches either way.
    x, y = _arrays(n)
    for seed in (0, 7, 2**31 - 2):
      ours = _collect(federated_data.make_client_dataset(
          x, y, batch_size=batch_size, epochs=epochs, shuffle_seed=seed))
      order = federated_data.client_order(n, epochs, seed)
      graph = _collect(federated_data.batches_in_order(x, y, order,
                                                       batch_size))
      self.assertEqual(len(ours[1]), len(graph[1]))
      for got, want in zip(ours[0] + ours[1], graph[0] + graph[1]):
        np.testing.assert_array_equal(got, want)

  def test_independent_of_tensorflow_global_seed(self):
    x, y = _arrays(20)
    y = np.arange(20, dtype=np.int32)
    orders = []
    for global_seed in (1, 2):
      tf.random.set_seed(global_seed)
      ds = federated_data.make_client_dataset(
          x, y, batch_size=20, epochs=1, shuffle_seed=9)
      orders.append(np.concatenate(_collect(ds)[1]))
    np.testing.assert_array_equal(orders[0], orders[1])

  @parameterized.named_parameters(
      ('empty', 0, dict(), r'non-empty'),
      ('batch', 5, dict(batch_size=0), r'batch_size=0'),
      ('epochs', 5, dict(epochs=0), r'epochs=0'),
      ('seed', 5, dict(shuffle_seed=-1), r'shuffle_seed=-1'),
  )
  def test_invalid_arguments(self, n, overrides, message):
    x, y = _arrays(n)
    kwargs = dict(batch_size=2, epochs=1, shuffle_seed=0)
    kwargs.update(overrides)
    with self.assertRaisesRegex(DataError, message):
      federated_data.make_client_dataset(x, y, **kwargs)

  def test_wrong_dtypes(self):
    x, y = _arrays(3)
    with self.assertRaisesRegex(DataError, r'float32/int32'):
      federated_data.make_client_dataset(
          x.astype(np.float64), y, batch_size=2, epochs=1, shuffle_seed=0)


if __name__ == '__main__':
  absltest.main()
