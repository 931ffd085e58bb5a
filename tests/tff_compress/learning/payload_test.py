"""The round's byte totals (`learning/payload.py`): from the type when every
client's message has the same size, client by client otherwise."""

from __future__ import annotations

import collections

from absl.testing import absltest
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.encoders import chain as chain_lib
from tff_compress.learning import payload
from tff_compress.runtime import local as local_runtime


class StaticBytesTest(absltest.TestCase):

  def test_sizes_of_static_types(self):
    self.assertEqual(payload.static_bytes(tff.TensorType(np.float32, [3, 4])),
                     48)
    self.assertEqual(payload.static_bytes(tff.TensorType(np.int64)), 8)
    nested = tff.to_type(collections.OrderedDict(
        a=[(np.float32, [784, 64]), (np.float32, [64])],
        seed=(np.int64, [2]), flags=(np.bool_, [5]), code=(np.uint8, [7])))
    self.assertEqual(payload.static_bytes(nested),
                     4 * (784 * 64 + 64) + 16 + 5 + 7)

  def test_dynamic_or_non_numeric_types_have_no_static_size(self):
    for t in (tff.TensorType(np.float32, [None]),
              tff.TensorType(np.float32, None),
              tff.to_type([(np.float32, [2]), (np.int32, [None, 3])]),
              tff.TensorType(np.str_)):
      self.assertIsNone(payload.static_bytes(t), t)


class SumAtClientsTest(absltest.TestCase):

  def _per_client(self, values):
    return sum(int(chain_lib.payload_bytes(v)) for v in values)

  def test_static_total_is_the_sum_of_each_clients_bytes(self):
    value_type = tff.to_type([(np.float32, [10, 3]), (np.float32, [3])])

    @tff.federated_computation(tff.FederatedType(value_type, tff.CLIENTS),
                               tff.FederatedType(np.float32, tff.CLIENTS))
    def total(values, weights):
      return (payload.sum_at_clients(values),
              payload.sum_at_clients(values, weights))

    rng = np.random.default_rng(0)
    clients = [[rng.random((10, 3), np.float32), rng.random(3, np.float32)]
               for _ in range(7)]
    with local_runtime.local_context():
      alone, weighted = total(clients, [1.0] * 7)
    self.assertEqual(alone, self._per_client(clients))
    self.assertEqual(alone, 7 * 132)
    self.assertEqual(weighted, 7 * 136)

  def test_dynamic_sizes_are_measured_client_by_client(self):
    @tff.tensorflow.computation(np.int32)
    def message(n):
      return tf.range(n, dtype=tf.float32)

    @tff.federated_computation(tff.FederatedType(np.int32, tff.CLIENTS))
    def total(sizes):
      messages = tff.federated_map(message, sizes)
      return (payload.sum_at_clients(messages),
              payload.sum_at_clients(messages, sizes))

    with local_runtime.local_context():
      alone, with_size = total([1, 5, 0, 9])
    self.assertEqual(alone, 4 * 15)
    self.assertEqual(with_size, 4 * 15 + 4 * 4)


if __name__ == '__main__':
  absltest.main()
