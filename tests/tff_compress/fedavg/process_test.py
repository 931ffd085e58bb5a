"""The composed learning process: TFF-equivalent maths and exact byte counts."""

import collections

from absl.testing import absltest
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tests.tff_compress import run_utils
from tests.tff_compress.learning import learning_testing
from tff_compress.fedavg import process
from tff_compress.learning import aggregators
from tff_compress.learning import distributors
from tff_compress.runtime import local as local_runtime


def _task():
  return learning_testing.small_task(hidden=16)


_datasets = learning_testing.random_datasets


def _training():
  return run_utils.training(run_utils.default_config(
      **{'model.name': 'dense', 'client.learning_rate': 0.1}))


def _flat(weights):
  return [np.asarray(w) for w in tf.nest.flatten(weights)]


class ProcessTest(absltest.TestCase):

  def test_matches_tff_build_weighted_fed_avg(self):
    """Our composed FedAvg and TFF's own builder compute the same model."""
    task = _task()
    ours = process.build_learning_process(_training(), task)
    theirs = tff.learning.algorithms.build_weighted_fed_avg(
        task.model_fn,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(1.0))
    data = _datasets([12, 30, 7])
    with local_runtime.local_context():
      s_ours, s_theirs = ours.initialize(), theirs.initialize()
      for _ in range(2):
        s_ours = ours.next(s_ours, data).state
        s_theirs = theirs.next(s_theirs, data).state
      for a, b in zip(_flat(ours.get_model_weights(s_ours)),
                      _flat(theirs.get_model_weights(s_theirs))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)

  def test_bytes_are_counted_per_client(self):
    task = _task()
    lp = process.build_learning_process(_training(), task)
    with local_runtime.local_context():
      out = lp.next(lp.initialize(), _datasets([5, 9, 3, 4]))
    # float32 model to each of 4 clients; each returns a float32 update of
    # the trainable weights plus its float32 weight.
    self.assertEqual(int(out.metrics['distributor']['bytes_down']),
                     4 * 4 * task.num_params)
    self.assertEqual(int(out.metrics['aggregator']['bytes_up']),
                     4 * (4 * task.num_params + 4))
    self.assertEqual(
        int(out.metrics['client_work']['train']['num_examples']), 21)

  def test_pieces_plug_into_tff_fed_avg_builder(self):
    task = _task()
    mw_type = process.build_initial_weights_fn(task).type_signature.result
    lp = tff.learning.algorithms.build_weighted_fed_avg(
        task.model_fn,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1),
        model_distributor=distributors.build_plain_broadcast(mw_type),
        model_aggregator=aggregators.build_mean())
    with local_runtime.local_context():
      out = lp.next(lp.initialize(), _datasets([6, 6]))
    self.assertEqual(int(out.metrics['distributor']['bytes_down']),
                     2 * 4 * task.num_params)
    self.assertIn('bytes_up', out.metrics['aggregator'])

  def test_initial_weights_are_seeded(self):
    task = _task()
    fn = process.build_initial_weights_fn(task)
    with local_runtime.local_context():
      a, b = fn(), fn()
    for x, y in zip(_flat(a), _flat(b)):
      np.testing.assert_array_equal(x, y)


if __name__ == '__main__':
  absltest.main()
