"""A pruning phase as a TFF process: FedAvg at sparsity 0, masked
coordinates stay exactly zero, clients train under the mask (or a real
smaller model), bytes follow the kept coordinates, the pieces compose."""

import collections

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from tests.tff_compress import run_utils
from tests.tff_compress import runtime_testing
from tests.tff_compress.learning import learning_testing
from tff_compress.data import federated_data
from tff_compress.fedavg import process
from tff_compress.learning import task as task_lib
from tff_compress.models import flops
from tff_compress.models import registry as model_registry
from tff_compress.pruning import masks

_datasets = learning_testing.random_datasets
_SHAPE = learning_testing.SHAPE


def _task(hidden=16):
  """The small dense task, able to build narrower models (units)."""

  def builder(widths, scales=None):
    del scales
    return model_registry.build_model('dense', _SHAPE, 10, hidden=(hidden,),
                                      seed=1, widths=widths or None)

  probe = builder({})
  return task_lib.Task(lambda: builder({}),
                       federated_data.element_spec(_SHAPE),
                       flops.count_params(probe),
                       flops.training_flops_per_example(probe), builder)


def _settings(**overrides):
  return run_utils.training(run_utils.default_config(**{
      'model.name': 'dense', 'client.learning_rate': 0.1,
      'server.momentum': 0.9, 'rounds': 4, 'pruning.target': 0.5,
      'pruning.begin_round': 1, 'pruning.end_round': 3,
      'pruning.frequency': 2, **overrides}))


def _flat(weights):
  return [np.asarray(w) for w in tf.nest.flatten(weights)]


def _trainable(training, state):
  return [np.asarray(w) for w in
          training.process.get_model_weights(state).trainable]


class ProcessTest(runtime_testing.LocalRuntimeTestCase):

  def test_sparsity_zero_is_fedavg(self):
    """Phase 0 sends everything and trains under an all-ones mask."""
    task = _task()
    pruned = process.build_training(_settings(), task)
    self.assertEqual(pruned.phases.schedule.phases[1].sparsity, 0.5)
    plain = process.build_learning_process(
        _settings(**{'pruning.target': 0.0}), task)
    data = _datasets([12, 30, 7])
    a, b = pruned.process.initialize(), plain.initialize()
    for _ in range(2):
      out_a, out_b = pruned.process.next(a, data), plain.next(b, data)
      a, b = out_a.state, out_b.state
    for x, y in zip(_flat(pruned.process.get_model_weights(a)),
                    _flat(plain.get_model_weights(b))):
      np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    self.assertEqual(int(out_a.metrics['distributor']['bytes_down']),
                     int(out_b.metrics['distributor']['bytes_down']))
    self.assertEqual(int(out_a.metrics['aggregator']['bytes_up']),
                     int(out_b.metrics['aggregator']['bytes_up']))

  def test_masked_coordinates_stay_zero_and_bytes_follow(self):
    task = _task()
    training = process.build_training(_settings(), task)
    layout = training.phases.layout
    phase = training.at_round(3)  # 50 %
    self.assertIsNot(phase, training)
    kept = layout.kept(0.5)
    data = _datasets([12, 30, 7])
    state = training.process.initialize()
    state = training.process.next(state, data).state  # dense round
    masks_seen = []
    for _ in range(3):
      out = phase.process.next(state, data)
      state = out.state
      weights = _trainable(phase, state)
      current = [np.asarray(m) for m in state.distributor['masks']]
      masks_seen.append(current)
      for i, mask in zip(layout.kernel_index, current):
        self.assertEqual(int(mask.sum()), kept[layout.kernel_index.index(i)])
        # exactly zero although server momentum keeps pushing
        self.assertTrue(np.all(weights[i][~mask] == 0.0))
        self.assertGreater(np.count_nonzero(weights[i][mask]),
                           0.99 * mask.sum())
    for later in masks_seen[1:]:  # the mask is decided once per phase
      for a, b in zip(masks_seen[0], later):
        np.testing.assert_array_equal(a, b)
    sizes = [int(np.prod(s)) for s in layout.full_shapes]
    for i, k in zip(layout.kernel_index, kept):
      sizes[i] = k
    self.assertEqual(int(out.metrics['distributor']['bytes_down']),
                     3 * 4 * sum(sizes))
    self.assertEqual(int(out.metrics['aggregator']['bytes_up']),
                     3 * (4 * sum(sizes) + 4))
    self.assertEqual(int(out.metrics['pruning']['mask_bytes']),
                     layout.mask_message_bytes())
    self.assertAlmostEqual(float(out.metrics['pruning']['sparsity']), 0.5,
                           places=6)

  def test_client_trains_under_the_mask(self):
    """One client, server SGD at lr 1: the new model is the client's model
    after masked SGD (tfmot's wrapper re-applies the mask every step)."""
    task = _task()
    ts = _settings(**{'server.momentum': 0.0, 'pruning.begin_round': 1,
                      'pruning.end_round': 1})
    training = process.build_training(ts, task)
    layout = training.phases.layout
    phase = training.at_round(1)
    rng = np.random.default_rng(3)
    x = rng.random((24,) + _SHAPE, dtype=np.float32)
    y = rng.integers(0, 10, 24).astype(np.int32)
    data = tf.data.Dataset.from_tensor_slices(
        collections.OrderedDict(x=x, y=y)).batch(8)
    state = phase.process.initialize()
    start = _trainable(phase, state)
    state = phase.process.next(state, [data]).state
    got = _trainable(phase, state)
    mask = [np.asarray(m) for m in state.distributor['masks']]
    coverage = [np.ones(s, np.float32) for s in layout.full_shapes]
    for i, m in zip(layout.kernel_index, mask):
      coverage[i] = m.astype(np.float32)
    weights = [tf.Variable(w * c) for w, c in zip(start, coverage)]
    model = task.keras_model_fn()
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for a in range(0, 24, 8):
      for v, w in zip(model.trainable_weights, weights):
        v.assign(w)
      with tf.GradientTape() as tape:
        loss = loss_fn(y[a:a + 8], model(x[a:a + 8]))
      grads = tape.gradient(loss, model.trainable_weights)
      for w, g, c in zip(weights, grads, coverage):
        w.assign((w - 0.1 * g) * c)
    for a, b in zip(got, weights):
      np.testing.assert_allclose(a, b.numpy(), rtol=1e-5, atol=1e-6)

  def test_units_train_a_real_smaller_model(self):
    """A units round is a FedAvg round of the submodel, scattered back."""
    task = _task()
    ts = _settings(**{'pruning.structure': 'units',
                      'pruning.begin_round': 1, 'pruning.end_round': 1,
                      'server.momentum': 0.0})
    training = process.build_training(ts, task)
    layout = training.phases.layout
    phase = training.at_round(1)
    self.assertEqual(layout.plan(0.5).widths, {'dense1': 8})
    self.assertLess(phase.client_task.train_flops_per_example,
                    task.train_flops_per_example / 1.9)
    data = _datasets([12, 30])
    plain_sub = process.build_learning_process(
        _settings(**{'pruning.target': 0.0, 'server.momentum': 0.0}),
        phase.client_task)
    state = phase.process.initialize()
    start = _trainable(phase, state)
    out = phase.process.next(state, data)
    got = _trainable(phase, out.state)
    mask = [tf.constant(m) for m in out.state.distributor['masks']]
    sub_start = [np.asarray(w) for w in layout.compact(start, mask, 0.5)]
    sub_state = plain_sub.initialize()
    sub_state = plain_sub.set_model_weights(
        sub_state, type(plain_sub.get_model_weights(sub_state))(
            sub_start, []))
    sub_out = plain_sub.next(sub_state, data)
    want = layout.expand(
        list(plain_sub.get_model_weights(sub_out.state).trainable),
        mask, 0.5)
    self.assertEqual(int(out.metrics['distributor']['bytes_down']),
                     int(sub_out.metrics['distributor']['bytes_down']))
    for a, b in zip(got, want):
      np.testing.assert_allclose(a, np.asarray(b), rtol=1e-6, atol=1e-7)

  def test_composes_with_codecs_and_user_dp(self):
    task = _task(hidden=64)
    ts = _settings(**{
        'broadcast.bits': 8, 'broadcast.min_size': 100,
        'uplink.transform': 'hadamard', 'uplink.bits': 4,
        'uplink.min_size': 100, 'dp.mode': 'user',
        'dp.noise_multiplier': 0.0, 'dp.clip': 0.3,
        'pruning.begin_round': 1, 'pruning.end_round': 1})
    training = process.build_training(ts, task)
    layout = training.phases.layout
    phase = training.at_round(1)
    state = phase.process.initialize()
    start = _trainable(phase, state)
    out = phase.process.next(state, _datasets([12, 30, 7]))
    got = _trainable(phase, out.state)
    mask = [np.asarray(m) for m in out.state.distributor['masks']]
    for i, m in zip(layout.kernel_index, mask):
      self.assertTrue(np.all(got[i][~m] == 0.0))
    # DP-FedAvg: K = 10 expected clients, each clipped to 0.3 (after
    # masking: the clip sees only the kept coordinates).
    moved = np.sqrt(sum(
        np.sum((g - s * c) ** 2) for g, s, c in zip(
            got, start, [1.0 if c is None else np.asarray(c)
                         for c in layout.coverage(
                             [tf.constant(m) for m in mask])])))
    self.assertLessEqual(moved, 3 * 0.3 / 10 * (1 + 1e-4))
    self.assertGreater(moved, 0.0)
    dense_bytes = 4 * task.num_params
    self.assertLess(int(out.metrics['distributor']['bytes_down']),
                    3 * dense_bytes / 6)
    self.assertLess(int(out.metrics['aggregator']['bytes_up']),
                    3 * dense_bytes / 12)

  def test_phases_hand_over_the_state(self):
    training = process.build_training(
        _settings(**{'pruning.target': 0.8}), _task())
    layout = training.phases.layout
    data = _datasets([10, 10])
    state = training.process.initialize()
    counts = []
    for r in range(1, 5):
      state = training.at_round(r).process.next(state, data).state
      counts.append([int(np.sum(m)) for m in state.distributor['masks']])
    schedule = training.phases.schedule
    self.assertEqual(counts, [list(layout.kept(schedule.phase(r).sparsity))
                              for r in range(1, 5)])
    self.assertEqual(counts[0], list(layout.kept(0.0)))
    self.assertEqual(counts[3], [masks.kept_count(784 * 16, 0.8),
                                 masks.kept_count(160, 0.8)])


if __name__ == '__main__':
  absltest.main()
