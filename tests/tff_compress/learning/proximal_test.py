"""FedProx's client work: the proximal gradient, and why TFF's is not used."""

from absl.testing import absltest
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.learning.templates import proximal_client_work

from tests.tff_compress.learning import learning_testing
from tff_compress.fedavg import process
from tff_compress.learning import proximal
from tff_compress.runtime import local as local_runtime

_LR = 0.1


def _reference_update(task, w0, dataset, mu):
  """Δ = w₀ − w after SGD on the loss + (mu/2)‖w − w₀‖², in eager TF."""
  model = task.keras_model_fn()
  for v, a in zip(model.trainable_weights, w0):
    v.assign(a)
  loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  for batch in dataset:
    with tf.GradientTape() as tape:
      value = loss(batch['y'], model(batch['x'], training=True))
    grads = tape.gradient(value, model.trainable_weights)
    for v, g, a in zip(model.trainable_weights, grads, w0):
      v.assign(v - _LR * (g + mu * (v - a)))
  return [a - v.numpy() for v, a in zip(model.trainable_weights, w0)]


class ProximalClientWorkTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.task = learning_testing.small_task(hidden=4)
    self.weights_type = process.build_initial_weights_fn(
        self.task).type_signature.result
    self.w0 = [v.numpy() for v in self.task.keras_model_fn().trainable_weights]
    self.data = learning_testing.random_datasets([24, 13])

  def _ours(self, mu, weighting=tff.learning.ClientWeighting.NUM_EXAMPLES):
    return proximal.build_proximal_client_work(
        self.task.model_fn, self.weights_type, proximal_strength=mu,
        optimizer=tff.learning.optimizers.build_sgdm(_LR),
        client_weighting=weighting)

  def _run(self, work):
    weights = tff.learning.models.ModelWeights(self.w0, [])
    out = work.next(work.initialize(), [weights] * len(self.data), self.data)
    return [[np.asarray(u) for u in r.update] for r in out.result], [
        float(r.update_weight) for r in out.result], out.measurements

  def test_update_is_sgd_on_the_proximal_objective(self):
    with local_runtime.local_context():
      updates, weights, metrics = self._run(self._ours(2.0))
    for update, dataset in zip(updates, self.data):
      for a, b in zip(update, _reference_update(self.task, self.w0, dataset,
                                                2.0)):
        np.testing.assert_allclose(a, b, atol=2e-6)
    self.assertEqual(weights, [24.0, 13.0])
    self.assertEqual(int(metrics['train']['num_examples']), 37)

  def test_mu_zero_is_tff_model_delta_client_work_bit_for_bit(self):
    theirs = tff.learning.templates.build_model_delta_client_work(
        self.task.model_fn, tff.learning.optimizers.build_sgdm(_LR),
        tff.learning.ClientWeighting.NUM_EXAMPLES)
    with local_runtime.local_context():
      ours, ours_w, ours_m = self._run(self._ours(0.0))
      ref, ref_w, ref_m = self._run(theirs)
    for a, b in zip(sum(ours, []), sum(ref, [])):
      np.testing.assert_array_equal(a, b)
    self.assertEqual(ours_w, ref_w)
    self.assertEqual(ours_m['train']['loss'], ref_m['train']['loss'])

  def test_uniform_weighting_reports_one(self):
    with local_runtime.local_context():
      _, weights, _ = self._run(
          self._ours(0.5, tff.learning.ClientWeighting.UNIFORM))
    self.assertEqual(weights, [1.0, 1.0])

  def test_installed_tff_proximal_work_has_the_opposite_sign(self):
    """TFF 0.87's proximal client work descends loss - (mu/2)‖w − w₀‖².

    If this fails after a TFF upgrade, TFF fixed the sign and its client
    work can replace `learning/proximal.py`.
    """
    theirs = proximal_client_work.build_model_delta_client_work(
        self.task.model_fn, tff.learning.optimizers.build_sgdm(_LR),
        tff.learning.ClientWeighting.NUM_EXAMPLES, 2.0,
        loop_implementation=tff.learning.LoopImplementation.DATASET_REDUCE)
    with local_runtime.local_context():
      updates, _, _ = self._run(theirs)
    flipped = _reference_update(self.task, self.w0, self.data[0], -2.0)
    for a, b in zip(updates[0], flipped):
      np.testing.assert_allclose(a, b, atol=2e-6)

  def test_bad_strength_is_refused(self):
    for mu in (-0.1, float('nan'), float('inf')):
      with self.assertRaisesRegex(ValueError, 'proximal_strength'):
        self._ours(mu)


if __name__ == '__main__':
  absltest.main()
