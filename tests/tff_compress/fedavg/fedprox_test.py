"""client.work=fedprox: the proximal client work as a registry entry (its
maths: tests/tff_compress/learning/proximal_test.py)."""

from absl.testing import absltest
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tests.tff_compress import run_utils
from tests.tff_compress.learning import learning_testing
from tff_compress import config_lib
from tff_compress.data import registry as data_registry
from tff_compress.fedavg import process
from tff_compress.learning import task as task_lib
from tff_compress.runtime import local as local_runtime


def _task():
  return learning_testing.small_task(hidden=16)


def _training(**overrides):
  return run_utils.training(run_utils.default_config(**{
      'model.name': 'dense', 'client.learning_rate': 0.1, **overrides}))


def _fedprox(mu: float, **overrides):
  return _training(**{'client.work': 'fedprox',
                      'client.proximal_strength': mu, **overrides})


def _flat(weights):
  return [np.asarray(w) for w in tf.nest.flatten(weights)]


def _train(process_, data, rounds: int = 2):
  state = process_.initialize()
  for _ in range(rounds):
    state = process_.next(state, data).state
  return _flat(process_.get_model_weights(state))


class FedProxTest(absltest.TestCase):

  def test_mu_zero_is_sgd_bit_for_bit(self):
    task, data = _task(), learning_testing.random_datasets([12, 30, 7])
    with local_runtime.local_context():
      sgd = _train(process.build_learning_process(_training(), task), data)
      prox = _train(process.build_learning_process(_fedprox(0.0), task),
                    data)
    for a, b in zip(sgd, prox):
      np.testing.assert_array_equal(a, b)

  def test_stronger_mu_keeps_clients_closer_to_the_server_model(self):
    # Several local epochs, so the proximal term has steps to act on.
    task = _task()
    data = learning_testing.random_datasets([40, 40])
    data = [d.repeat(4) for d in data]
    norms = []
    with local_runtime.local_context():
      for mu in (0.0, 1.0, 5.0):
        lp = process.build_learning_process(_fedprox(mu), task)
        state = lp.initialize()
        before = _flat(lp.get_model_weights(state))
        after = _flat(lp.get_model_weights(lp.next(state, data).state))
        norms.append(np.sqrt(sum(np.sum((a - b) ** 2)
                                 for a, b in zip(after, before))))
    self.assertGreater(norms[0], norms[1])
    self.assertGreater(norms[1], norms[2])
    self.assertGreater(norms[2], 0.0)

  def test_composes_with_dropout_codecs_and_faults(self):
    cfg = run_utils.smoke_config()
    data = data_registry.build_federated_data(cfg.data, seed=0)
    task = task_lib.build_task('dense', data, seed=0)  # (builds submodels)
    ts = _fedprox(0.1, **{'dropout.keep': 0.5, 'uplink.bits': 8,
                          'uplink.transform': 'hadamard',
                          'uplink.min_size': 10, 'faults.nan_prob': 0.5})
    training = process.build_training(ts, task)
    data = learning_testing.random_datasets([9, 14, 6])
    with local_runtime.local_context():
      out = training.process.next(
          training.process.initialize(),
          training.client_inputs(data, [0, 1, 0]))
      weights = _flat(training.process.get_model_weights(out.state))
    self.assertEqual(int(out.metrics['aggregator']['zeroed']), 1)
    for w in weights:
      self.assertTrue(np.all(np.isfinite(w)))

  def test_config_errors(self):
    with self.assertRaisesRegex(
        config_lib.ConfigError,
        r"'client.proximal_strength' is 0.5 with client.work='sgd'"):
      run_utils.smoke_config(**{'client.proximal_strength': 0.5})
    with self.assertRaisesRegex(config_lib.ConfigError,
                                r"'client.work' is 'fedprox' with "
                                r"dp.mode='sample'"):
      run_utils.smoke_config(**{'client.work': 'fedprox',
                                'dp.mode': 'sample'})
    with self.assertRaisesRegex(config_lib.ConfigError,
                                r"'client.proximal_strength' is -1"):
      run_utils.smoke_config(**{'client.work': 'fedprox',
                                'client.proximal_strength': -1.0})


if __name__ == '__main__':
  absltest.main()
