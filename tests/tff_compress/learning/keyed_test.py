"""Keyed (per-client slice) pieces and the Federated Dropout process through
the TFF runtime: exact maths, bytes, zeroing, DP bound."""

import collections

from absl.testing import absltest
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tests.tff_compress import run_utils
from tests.tff_compress.learning import learning_testing
from tff_compress.data import federated_data
from tff_compress.dropout import slicing as dropout_slicing
from tff_compress.dropout import submodel
from tff_compress.encoders import settings as codec_settings
from tff_compress.fedavg import process
from tff_compress.learning import aggregators
from tff_compress.learning import keyed
from tff_compress.learning import task as task_lib
from tff_compress.models import flops
from tff_compress.models import registry as model_registry
from tff_compress.runtime import local as local_runtime

SEED = 11


def _task(hidden=(12, 8)) -> task_lib.Task:
  def builder(widths, scales=None):
    return model_registry.build_model(
        'dense', learning_testing.SHAPE, 10, hidden=hidden, seed=1,
        widths=dict(widths), scales=scales)
  probe = builder({})
  return task_lib.Task(lambda: builder({}),
                       federated_data.element_spec(learning_testing.SHAPE),
                       flops.count_params(probe),
                       flops.training_flops_per_example(probe), builder)


def _cfg(keep=0.5, mask='per_client', k=3, **overrides):
  return run_utils.default_config(**{
      'model.name': 'dense', 'seed': SEED, 'clients_per_round': k,
      'client.learning_rate': 0.1, 'dropout.keep': keep,
      'dropout.mask': mask, **overrides})


def _training(cfg, task):
  return process.build_training(run_utils.training(cfg), task)


def _handmade_process(task, plan, client_work_fn, wrap=lambda mean: mean):
  """The keyed composer of a per-client dropout plan with a handmade client
  work and `wrap(scatter mean)` as the aggregator."""
  initial = process.build_initial_weights_fn(task)
  mw_type = initial.type_signature.result
  sub_type = process.build_initial_weights_fn(
      task.with_widths(plan.widths)).type_signature.result
  data_type = tff.SequenceType(tff.types.tensorflow_to_type(
      task.input_spec))
  slicing = dropout_slicing.MaskSlicing(plan, SEED, True, 3)
  mean = keyed.ScatterMeanFactory(slicing, mw_type.trainable)
  return keyed.compose_keyed_learning_process(
      initial,
      keyed.build_keyed_distributor(mw_type, sub_type, slicing,
                                    codec_settings.BroadcastCodec()),
      client_work_fn(sub_type, data_type),
      wrap(mean).create(sub_type.trainable, tff.TensorType(np.float32)),
      tff.learning.templates.build_apply_optimizer_finalizer(
          tff.learning.optimizers.build_sgdm(1.0), mw_type))


def _one_round(lp, sizes):
  """(trainable weights before, after, output) of one round of `lp`."""
  with local_runtime.local_context():
    state = lp.initialize()
    before = _flat(lp.get_model_weights(state).trainable)
    out = lp.next(state, keyed.client_inputs(
        learning_testing.random_datasets(sizes)))
    after = _flat(lp.get_model_weights(out.state).trainable)
  return before, after, out


def _expected_update(plan, sizes, before, skip=()):
  """Per coordinate: Σ_i n_i m_ij n_i / Σ_i n_i m_ij over clients not in
  `skip` (the handmade update of client i is n_i everywhere, weight n_i)."""
  num = [np.zeros_like(w) for w in before]
  den = [np.zeros_like(w) for w in before]
  for slot, n in enumerate(sizes):
    if slot in skip:
      continue
    kept = plan.kept_indices(submodel.mask_seed(SEED, 1, slot))
    for j, c in enumerate(plan.coverage(kept)):
      num[j] += n * c.numpy() * n
      den[j] += n * c.numpy()
  return [np.where(c > 0, s / np.maximum(c, 1e-30), 0.0)
          for s, c in zip(num, den)], den


def _flat(weights):
  return [np.asarray(w) for w in tf.nest.flatten(weights)]


class DropoutProcessTest(absltest.TestCase):

  def test_count_average_is_exact_on_handmade_updates(self):
    """u_j = sum_i n_i m_ij n_i / sum_i n_i m_ij; untrained keep their value."""
    task = _task()
    plan = process.dropout_plan(run_utils.training(_cfg(keep=0.4)), task)
    lp = _handmade_process(task, plan, learning_testing.count_client_work)
    sizes = [3, 10, 5]
    before, after, out = _one_round(lp, sizes)

    expected, den = _expected_update(plan, sizes, before)
    untrained = 0
    for b, a, e, c in zip(before, after, expected, den):
      np.testing.assert_allclose(b - a, e, rtol=1e-6, atol=1e-6)
      np.testing.assert_array_equal(a[c == 0], b[c == 0])
      untrained += int((c == 0).sum())
    self.assertGreater(untrained, 0)  # the test covers untouched coordinates
    self.assertAlmostEqual(
        float(out.metrics['aggregator']['untrained_fraction']),
        untrained / sum(w.size for w in before), places=6)

  def test_bytes_are_those_of_the_submodel(self):
    task = _task()
    training = _training(_cfg(keep=0.5), task)
    sub_params = training.client_task.num_params
    self.assertLess(sub_params, task.num_params / 2)
    with local_runtime.local_context():
      out = training.process.next(
          training.process.initialize(),
          training.client_inputs(learning_testing.random_datasets([4, 6, 5])))
    self.assertEqual(int(out.metrics['distributor']['bytes_down']),
                     3 * 4 * sub_params)
    self.assertEqual(int(out.metrics['aggregator']['bytes_up']),
                     3 * (4 * sub_params + 4))

  def test_per_round_masks_are_shared(self):
    task = _task()
    training = _training(_cfg(keep=0.5, mask='per_round', k=4), task)
    plan = training.plan
    with local_runtime.local_context():
      out = training.process.next(
          training.process.initialize(),
          training.client_inputs(learning_testing.random_datasets([4] * 4)))
    cover = plan.coverage(plan.kept_indices(submodel.mask_seed(SEED, 1, 0)))
    total = sum(int(c.numpy().size) for c in cover)
    untrained = sum(int((c.numpy() == 0).sum()) for c in cover)
    self.assertAlmostEqual(
        float(out.metrics['aggregator']['untrained_fraction']),
        untrained / total, places=6)

  def test_keep_one_is_plain_fedavg_bit_for_bit(self):
    task = _task()
    ts = run_utils.training(_cfg(keep=1.0))
    training = process.build_training(ts, task)
    self.assertIsNone(training.plan)
    plain = process.build_learning_process(ts, task)
    # The dropout process itself with every unit kept: same maths.
    full_plan = submodel.build_plan(task.keras_model_fn(), {})
    forced, _ = process.build_dropout_learning_process(ts, task, full_plan)
    data = learning_testing.random_datasets([12, 30, 7])
    with local_runtime.local_context():
      s_a, s_b, s_c = (training.process.initialize(), plain.initialize(),
                       forced.initialize())
      for _ in range(2):
        s_a = training.process.next(s_a, training.client_inputs(data)).state
        s_b = plain.next(s_b, data).state
        s_c = forced.next(s_c, keyed.client_inputs(data)).state
      a = _flat(training.process.get_model_weights(s_a))
      b = _flat(plain.get_model_weights(s_b))
      c = _flat(forced.get_model_weights(s_c))
    # Routed to the plain process, and the dropout process with every unit
    # kept computes the very same bits (gather/scatter of all indices and
    # sum/count equal MeanFactory's weighted mean here).
    for x, y, z in zip(a, b, c):
      np.testing.assert_array_equal(x, y)
      np.testing.assert_array_equal(z, y)

  def test_composes_with_codecs(self):
    task = _task(hidden=(64,))
    training = _training(_cfg(keep=0.75, **{
        'broadcast.bits': 8, 'uplink.transform': 'hadamard',
        'uplink.bits': 2, 'broadcast.min_size': 100,
        'uplink.min_size': 100}), task)
    plain = _training(_cfg(keep=0.75), task)
    data = training.client_inputs(learning_testing.random_datasets([8, 8, 8]))
    with local_runtime.local_context():
      out = training.process.next(training.process.initialize(), data)
      ref = plain.process.next(plain.process.initialize(), data)
      w = _flat(training.process.get_model_weights(out.state))
    self.assertTrue(all(np.isfinite(x).all() for x in w))
    down = int(out.metrics['distributor']['bytes_down'])
    up = int(out.metrics['aggregator']['bytes_up'])
    self.assertLess(down, int(ref.metrics['distributor']['bytes_down']) / 3.5)
    self.assertLess(up, int(ref.metrics['aggregator']['bytes_up']) / 10)

  def test_encoded_submodels_arrive_intact(self):
    """A nearly lossless (16-bit) broadcast of the selected submodels gives
    the float round's model: federated_select must deliver every codec entry
    (min/max, codes) where the decoder expects it."""
    task = _task(hidden=(64,))
    data = learning_testing.random_datasets([8, 8, 8])
    weights = {}
    for bits in (32, 16):
      training = _training(_cfg(keep=0.75, **{
          'broadcast.bits': bits, 'broadcast.min_size': 100}), task)
      with local_runtime.local_context():
        state = training.process.initialize()
        w0 = _flat(training.process.get_model_weights(state).trainable)
        out = training.process.next(state, training.client_inputs(data))
        weights[bits] = _flat(
            training.process.get_model_weights(out.state).trainable)
    for before, exact, decoded in zip(w0, weights[32], weights[16]):
      update = np.abs(exact - before).max()
      self.assertGreater(update, 0)
      np.testing.assert_allclose(decoded, exact, atol=0.01 * update)

  def test_user_dp_bounds_the_decoded_submodel_updates(self):
    """DP-FedAvg + 1-bit Hadamard uplink: sum of decoded updates <= K C."""
    task = _task(hidden=(64,))
    training = _training(_cfg(keep=0.5, k=3, **{
        'dp.mode': 'user', 'dp.noise_multiplier': 0.0, 'dp.clip': 0.05,
        'client.learning_rate': 0.5, 'uplink.transform': 'hadamard',
        'uplink.bits': 1, 'uplink.min_size': 100}), task)
    plan = training.plan
    with local_runtime.local_context():
      state = training.process.initialize()
      before = _flat(training.process.get_model_weights(state).trainable)
      out = training.process.next(state, training.client_inputs(
          learning_testing.random_datasets([16, 16, 16])))
      after = _flat(training.process.get_model_weights(out.state).trainable)
    counts = [np.zeros_like(w) for w in before]
    for slot in range(3):
      kept = plan.kept_indices(submodel.mask_seed(SEED, 1, slot))
      for j, c in enumerate(plan.coverage(kept)):
        counts[j] += c.numpy()  # uniform weights under DP
    # update = sum / count per coordinate, so sum = update * count.
    total = np.sqrt(sum(float(np.sum(((b - a) * c) ** 2))
                        for b, a, c in zip(before, after, counts)))
    self.assertLessEqual(total, 3 * 0.05 * (1 + 1e-5))
    self.assertGreater(total, 0.05)  # clipped, not vanished
    self.assertEqual(int(out.metrics['aggregator']['zeroed']), 0)

  def test_non_finite_update_is_zeroed_and_leaves_the_mean(self):
    """A NaN client is zeroed, counted, and its weight leaves the
    per-coordinate denominators: the others' count average is exact."""
    task = _task()
    plan = process.dropout_plan(run_utils.training(_cfg(keep=0.5)), task)
    lp = _handmade_process(
        task, plan,
        lambda s, d: learning_testing.count_client_work(s, d, nan_size=10),
        wrap=lambda mean: aggregators.zeroing(1e6, mean))
    sizes = [3, 10, 5]
    before, after, out = _one_round(lp, sizes)
    self.assertEqual(int(out.metrics['aggregator']['zeroed']), 1)
    expected, _ = _expected_update(plan, sizes, before, skip=(1,))
    for b, a, e in zip(before, after, expected):
      np.testing.assert_allclose(b - a, e, rtol=1e-6, atol=1e-6)

  def test_poisoned_clients_are_zeroed_under_dropout(self):
    """faults.nan_prob with Federated Dropout: the fault-injecting client
    work and the zeroing stage compose with the keyed pieces."""
    task = _task()
    training = _training(_cfg(keep=0.5, **{'faults.nan_prob': 0.5}), task)
    data = learning_testing.random_datasets([4, 6, 5])
    with local_runtime.local_context():
      out = training.process.next(
          training.process.initialize(),
          training.client_inputs(data, faults=[0, 1, 0]))
      after = _flat(training.process.get_model_weights(out.state))
    self.assertEqual(int(out.metrics['aggregator']['zeroed']), 1)
    self.assertTrue(all(np.isfinite(w).all() for w in after))


if __name__ == '__main__':
  absltest.main()
