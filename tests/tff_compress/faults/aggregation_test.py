"""Poisoned updates after local training, zeroed before the mean and codec."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tests.tff_compress import run_utils
from tests.tff_compress.learning import learning_testing
from tff_compress.faults import client_work
from tff_compress.faults import schedule
from tff_compress.fedavg import process
from tff_compress.runtime import local as local_runtime


def _flat(weights):
  return [np.asarray(w) for w in tf.nest.flatten(weights)]


class PoisonTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.update = [tf.constant([[3.0, -1.0], [2.0, 5.0]]),
                   tf.constant([0.5, 4.0, -2.0])]

  def test_ok_is_identity(self):
    out = client_work.poison(self.update, tf.constant(schedule.OK), 1e6)
    for a, b in zip(out, self.update):
      np.testing.assert_array_equal(a, b)

  def test_nan_corrupts_first_entry_of_every_tensor(self):
    out = client_work.poison(self.update, tf.constant(schedule.NAN), 1e6)
    for a, b in zip(out, self.update):
      a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
      self.assertTrue(np.isnan(a[0]))
      np.testing.assert_array_equal(a[1:], b[1:])

  def test_huge_keeps_direction_with_the_given_norm(self):
    out = client_work.poison(self.update, tf.constant(schedule.HUGE), 1e6)
    flat = np.concatenate([np.asarray(t).ravel() for t in out])
    ref = np.concatenate([np.asarray(t).ravel() for t in self.update])
    self.assertAlmostEqual(np.linalg.norm(flat) / 1e6, 1.0, places=5)
    np.testing.assert_allclose(flat / np.linalg.norm(flat),
                               ref / np.linalg.norm(ref), rtol=1e-5)
    zero = [tf.zeros_like(t) for t in self.update]
    out = client_work.poison(zero, tf.constant(schedule.HUGE), 30.0)
    flat = np.concatenate([np.asarray(t).ravel() for t in out])
    self.assertAlmostEqual(float(np.linalg.norm(flat)), 30.0, places=3)


def _training(uplink=None, **faults):
  cfg = run_utils.default_config(
      **{'model.name': 'dense', 'client.learning_rate': 0.1},
      **{f'faults.{k}': v for k, v in faults.items()},
      **{f'uplink.{k}': v for k, v in (uplink or {}).items()})
  return process.build_training(run_utils.training(cfg),
                                learning_testing.small_task())


class FaultyProcessTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ('float32', {}),
      ('uplink_codec', dict(transform='hadamard', bits=4, min_size=10)),
  )
  def test_poisoned_clients_are_zeroed_and_excluded(self, uplink):
    """NaN/huge clients change nothing: same model as without them."""
    training = _training(uplink, nan_prob=0.1, huge_prob=0.1, huge_norm=1e4)
    self.assertTrue(training.injects_faults)
    data = learning_testing.random_datasets([12, 30, 7, 9])
    lp = training.process
    with local_runtime.local_context():
      state = lp.initialize()
      faulty = lp.next(state, training.client_inputs(
          data, [schedule.OK, schedule.NAN, schedule.HUGE, schedule.OK]))
      honest = lp.next(state, training.client_inputs([data[0], data[3]]))
      w_faulty = _flat(lp.get_model_weights(faulty.state).trainable)
      w_honest = _flat(lp.get_model_weights(honest.state).trainable)
    self.assertEqual(faulty.metrics['aggregator']['zeroed'], 2)
    self.assertEqual(honest.metrics['aggregator']['zeroed'], 0)
    for a, b in zip(w_faulty, w_honest):
      self.assertTrue(np.isfinite(a).all())
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # All four uploaded: poisoned updates are sent, then zeroed.
    self.assertEqual(faulty.metrics['aggregator']['bytes_up'],
                     2 * honest.metrics['aggregator']['bytes_up'])

  def test_codes_need_an_injecting_process(self):
    training = _training(drop_prob=0.2)
    self.assertFalse(training.injects_faults)
    data = learning_testing.random_datasets([5])
    self.assertLen(training.client_inputs(data, [schedule.OK]), 1)
    with self.assertRaisesRegex(ValueError, 'cannot inject'):
      training.client_inputs(data, [schedule.NAN])

  def test_client_data_layout(self):
    data = learning_testing.random_datasets([5, 6])
    inputs = client_work.client_data(data, [schedule.OK, schedule.HUGE])
    self.assertEqual(list(inputs[1]), ['fault', 'data'])
    self.assertEqual(list(inputs[1]['fault'].as_numpy_iterator()),
                     [schedule.HUGE])
    self.assertIs(inputs[0]['data'], data[0])
    with self.assertRaisesRegex(ValueError, '2 datasets but 1'):
      client_work.client_data(data, [schedule.OK])


if __name__ == '__main__':
  absltest.main()
