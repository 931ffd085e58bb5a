"""FedPer's pieces: the local layers never leave the clients.

Proved three ways: (1) in the compiled round, no intrinsic that moves data
between SERVER and CLIENTS carries a tensor of the local layers' shapes;
(2) the bytes each way are exactly the shared layers'; (3) the server's
local layers never change while every client's do, and each client's are
exactly what its own training produced.
"""

import collections

from absl.testing import absltest
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tests.tff_compress import run_utils
from tests.tff_compress.learning import learning_testing
from tests.tff_compress.personalization import personalization_testing
from tff_compress.fedavg import process
from tff_compress.personalization import local_layers
from tff_compress.runtime import local as local_runtime

HIDDEN = 16
# The dense test model: dense1 (784x16, 16) is shared, the head (16x10,
# 10) local; no other tensor of the round has the head's shapes.
SHARED_SHAPES = {(784, HIDDEN), (HIDDEN,)}
LOCAL_SHAPES = {(HIDDEN, 10), (10,)}


def _task():
  return learning_testing.small_task(hidden=HIDDEN)


def _ts(**overrides):
  return run_utils.training(run_utils.default_config(**{
      'model.name': 'dense', 'client.learning_rate': 0.1, **overrides}))


class LayerSplitTest(absltest.TestCase):

  def test_split_and_merge_are_inverse(self):
    split = local_layers.LayerSplit(local=(1, 3), num_trainable=5)
    self.assertEqual(split.shared, (0, 2, 4))
    values = ['a', 'b', 'c', 'd', 'e']
    self.assertEqual(split.merge(split.shared_of(values),
                                 split.local_of(values)), values)

  def test_bad_splits_are_refused(self):
    for local, n, msg in (((), 3, 'distinct'), ((1, 1), 3, 'distinct'),
                          ((3,), 3, 'outside'), ((0, 1), 2, 'every')):
      with self.assertRaisesRegex(ValueError, msg):
        local_layers.LayerSplit(local=local, num_trainable=n)
    split = local_layers.LayerSplit(local=(1,), num_trainable=3)
    with self.assertRaisesRegex(ValueError, '1 shared values, expected 2'):
      split.merge(['a'], ['b'])


class LocalLayersProcessTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.task = _task()
    cls.training = process.build_local_layers_training(_ts(), cls.task,
                                                       'head')
    cls.split = cls.training.local

  def test_the_head_is_local(self):
    self.assertEqual(self.split, local_layers.LayerSplit((2, 3), 4))

  def test_no_intrinsic_moves_a_local_layer(self):
    moved = personalization_testing.moved_tensor_shapes(self.training.process.next)
    everything = set().union(*moved.values())
    self.assertEmpty(everything & LOCAL_SHAPES, msg=dict(moved))
    # The shared layers do travel: down by broadcast, up by sum.
    self.assertTrue(SHARED_SHAPES <= moved['federated_broadcast'])
    self.assertTrue(SHARED_SHAPES <= moved['federated_sum'])

  def test_the_check_sees_the_head_in_a_fedavg_round(self):
    moved = personalization_testing.moved_tensor_shapes(
        process.build_learning_process(_ts(), self.task).next)
    self.assertTrue(LOCAL_SHAPES <= moved['federated_broadcast'])
    self.assertTrue(LOCAL_SHAPES <= moved['federated_sum'])

  def test_with_codecs_and_dp_no_intrinsic_moves_a_local_layer(self):
    for overrides in (
        {'broadcast.bits': 8, 'broadcast.min_size': 10,
         'uplink.transform': 'hadamard', 'uplink.bits': 4,
         'uplink.min_size': 10},
        {'dp.mode': 'user', 'dp.noise_multiplier': 0.5},
        {'secagg.enabled': True}):
      with self.subTest(overrides):
        training = process.build_local_layers_training(
            _ts(**overrides), self.task, 'head')
        moved = personalization_testing.moved_tensor_shapes(training.process.next)
        self.assertEmpty(set().union(*moved.values()) & LOCAL_SHAPES)

  def test_bytes_are_exactly_the_shared_layers(self):
    data = learning_testing.random_datasets([5, 9, 3])
    shared = 784 * HIDDEN + HIDDEN
    p = self.training.process
    with local_runtime.local_context():
      state = p.initialize()
      first = local_layers.initial_local_layers(p.get_model_weights(state),
                                                self.split)
      out = p.next(state, local_layers.client_inputs(data, [first] * 3))
    self.assertEqual(int(out.metrics['distributor']['bytes_down']),
                     3 * 4 * shared)
    # Each client's float32 update of the shared layers and its weight.
    self.assertEqual(int(out.metrics['aggregator']['bytes_up']),
                     3 * (4 * shared + 4))
    self.assertLess(3 * 4 * shared, 3 * 4 * self.task.num_params)

  def test_round_equals_fedavg_on_shared_layers_and_clients_keep_theirs(self):
    """From the server's head, a FedPer round trains what FedAvg trains; the
    server's head stays, each client's head is what its training made."""
    data = learning_testing.random_datasets([12, 30, 7])
    fedavg = process.build_learning_process(_ts(), self.task)
    whole_work = tff.learning.templates.build_model_delta_client_work(
        self.task.model_fn, tff.learning.optimizers.build_sgdm(0.1),
        tff.learning.ClientWeighting.NUM_EXAMPLES)
    p = self.training.process
    with local_runtime.local_context():
      avg = fedavg.get_model_weights(fedavg.next(fedavg.initialize(),
                                                 data).state)
      state = p.initialize()
      w0 = p.get_model_weights(state)
      first = local_layers.initial_local_layers(w0, self.split)
      out = p.next(state, local_layers.client_inputs(data, [first] * 3))
      w1 = p.get_model_weights(out.state)
      trained = whole_work.next(whole_work.initialize(), [w0] * 3, data)
    for i in self.split.shared:
      np.testing.assert_array_equal(w1.trainable[i], avg.trainable[i])
    for i in self.split.local:
      np.testing.assert_array_equal(w1.trainable[i], w0.trainable[i])
    for k, (result, local) in enumerate(zip(trained.result, out.local)):
      for j, i in enumerate(self.split.local):
        expected = np.asarray(w0.trainable[i]) - np.asarray(result.update[i])
        np.testing.assert_array_equal(local[j], expected, err_msg=f'client {k}')
        self.assertFalse(np.array_equal(local[j], first[j]))

  def test_server_head_never_changes_over_rounds(self):
    data = learning_testing.random_datasets([8, 8, 8, 8])
    p = self.training.process
    with local_runtime.local_context():
      state = p.initialize()
      w0 = p.get_model_weights(state)
      heads = [local_layers.initial_local_layers(w0, self.split)] * 4
      for _ in range(3):
        out = p.next(state, local_layers.client_inputs(data, heads))
        state, heads = out.state, [list(h) for h in out.local]
      w3 = p.get_model_weights(state)
    for i in self.split.local:
      np.testing.assert_array_equal(w3.trainable[i], w0.trainable[i])
    for i in self.split.shared:
      self.assertFalse(np.array_equal(w3.trainable[i], w0.trainable[i]))
    # Clients with different data end with different heads.
    self.assertFalse(np.array_equal(heads[0][0], heads[1][0]))

  def test_a_client_whose_training_diverges_keeps_its_layers(self):
    data = learning_testing.random_datasets([6, 6])
    poisoned = data[1].map(lambda b: collections.OrderedDict(
        x=b['x'] * np.float32(np.nan), y=b['y']))
    p = self.training.process
    with local_runtime.local_context():
      state = p.initialize()
      first = local_layers.initial_local_layers(p.get_model_weights(state),
                                                self.split)
      out = p.next(state, local_layers.client_inputs([data[0], poisoned],
                                                     [first, first]))
      weights = p.get_model_weights(out.state)
    for a, b in zip(out.local[1], first):
      np.testing.assert_array_equal(a, b)
    self.assertFalse(np.array_equal(out.local[0][0], first[0]))
    for w in tf.nest.flatten(weights):
      self.assertTrue(np.all(np.isfinite(w)))

  def test_client_inputs_need_one_set_of_layers_per_client(self):
    with self.assertRaisesRegex(ValueError, '2 datasets but 1 clients'):
      local_layers.client_inputs([1, 2], [[0]])


if __name__ == '__main__':
  absltest.main()
