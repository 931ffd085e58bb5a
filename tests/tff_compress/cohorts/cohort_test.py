"""Cohort execution equals per-client execution (`cohorts/`)."""

import dataclasses

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tests.tff_compress import run_utils
from tests.tff_compress import runtime_testing
from tff_compress import config_lib
from tff_compress.cohorts import batched_model
from tff_compress.cohorts import client_work as cohort_work
from tff_compress.cohorts import data as cohort_data
from tff_compress.data import federated_data
from tff_compress.dropout import slicing as dropout_slicing
from tff_compress.fedavg import process
from tff_compress.fedavg import registry
from tff_compress.learning import keyed
from tff_compress.learning import task as task_lib
from tff_compress.models import flops
from tff_compress.models import registry as model_registry

SHAPE = (12, 12, 1)
# Unequal sizes: with batch 4 the clients take 1 to 4 steps, so the cohort
# pads and some clients sit out its last steps.
SIZES = (3, 9, 14, 5, 16, 7)


def _task(model: str) -> task_lib.Task:
  """A small seeded `model` that can build Federated Dropout submodels."""
  base = {'dense': {'dense1': 8},
          'caldas_cnn': {'conv1': 3, 'conv2': 4, 'dense1': 6}}.get(model, {})

  def builder(widths, scales=None):
    kwargs = {}
    if base or widths:
      kwargs['widths'] = {**base, **dict(widths)}
    if scales:
      kwargs['scales'] = dict(scales)
    return model_registry.build_model(model, SHAPE, 5, seed=3, **kwargs)

  probe = builder({})
  return task_lib.Task(lambda: builder({}), federated_data.element_spec(SHAPE),
                       flops.count_params(probe),
                       flops.training_flops_per_example(probe), builder)


def _clients(round_num: int):
  rng = np.random.default_rng(round_num)
  return [(rng.normal(size=(n, *SHAPE)).astype(np.float32),
           rng.integers(0, 5, n).astype(np.int32), 100 * round_num + i)
          for i, n in enumerate(SIZES)]


def _settings(size: int, **overrides):
  ts = run_utils.training(run_utils.default_config(**{
      'clients_per_round': len(SIZES), 'client.batch_size': 4,
      'client.learning_rate': 0.1, **overrides}))
  return dataclasses.replace(ts, cohort_size=size)


def _run(ts, task, rounds: int = 2):
  """Final weights and per-round metrics of `rounds` rounds."""
  training = process.build_training(ts, task)
  lp = training.process
  state, metrics = lp.initialize(), []
  c = ts.client
  for r in range(1, rounds + 1):
    clients = _clients(r)
    if ts.cohort_size > 1:
      g = ts.cohort_size
      data = [cohort_data.cohort_dataset(
          clients[a:a + g], batch_size=c.batch_size, epochs=c.epochs,
          slots=range(a, a + g)) for a in range(0, len(clients), g)]
    else:
      data = training.client_inputs([federated_data.make_client_dataset(
          x, y, batch_size=c.batch_size, epochs=c.epochs, shuffle_seed=s)
                                     for x, y, s in clients])
    out = lp.next(state, data)
    state = out.state
    metrics.append(out.metrics)
  weights = lp.get_model_weights(state)
  return [np.asarray(w) for w in tf.nest.flatten(weights.trainable)], metrics


def _bytes_up(metrics, cohort: bool):
  return [int((m['client_work'] if cohort else m['aggregator'])['bytes_up'])
          for m in metrics]


class CohortEqualsPerClientTest(runtime_testing.LocalRuntimeTestCase):

  @parameterized.named_parameters(
      ('fedavg_dense', 'dense', {}),
      ('fedavg_momentum_two_epochs', 'dense',
       {'client.momentum': 0.9, 'client.epochs': 2}),
      ('fedavg_cnn', 'caldas_cnn', {}),
      ('logistic', 'logistic', {}),
      ('lossy_broadcast_cnn', 'caldas_cnn',
       {'broadcast.bits': 8, 'broadcast.min_size': 10}),
      ('dp_fixed_clip', 'dense',
       {'dp.mode': 'user', 'dp.noise_multiplier': 0.0, 'dp.clip': 0.05}),
      ('dp_fixed_clip_cnn', 'caldas_cnn',
       {'dp.mode': 'user', 'dp.noise_multiplier': 0.0, 'dp.clip': 0.05}),
      ('dropout', 'dense', {'dropout.keep': 0.5}),
      ('dropout_cnn_lossy_broadcast', 'caldas_cnn',
       {'dropout.keep': 0.5, 'broadcast.bits': 8, 'broadcast.min_size': 10}),
      ('dropout_per_round_mask', 'dense',
       {'dropout.keep': 0.5, 'dropout.mask': 'per_round'}),
      ('dropout_dp', 'dense',
       {'dropout.keep': 0.5, 'dp.mode': 'user', 'dp.noise_multiplier': 0.0,
        'dp.clip': 0.05}),
  )
  def test_same_model_bytes_and_metrics(self, model, overrides):
    task = _task(model)
    ref, ref_m = _run(_settings(1, **overrides), task)
    for size in (2, 3):
      got, got_m = _run(_settings(size, **overrides), task)
      for a, b in zip(ref, got):
        np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-6)
      self.assertEqual(_bytes_up(got_m, True), _bytes_up(ref_m, False))
      for m, r in zip(got_m, ref_m):
        down = (int(m['client_work']['bytes_down'])
                if 'bytes_down' in m['client_work'] else
                int(m['distributor']['bytes_down']) * size)
        self.assertEqual(down, int(r['distributor']['bytes_down']))
        for key in ('loss', 'accuracy'):
          self.assertAlmostEqual(
              float(m['client_work']['train'][key]),
              float(r['client_work']['train'][key]), places=4)

  @parameterized.named_parameters(
      ('codec', {'uplink.bits': 2, 'uplink.transform': 'hadamard',
                 'uplink.min_size': 10}),
      ('dp_codec', {'dp.mode': 'user', 'dp.noise_multiplier': 0.0,
                    'dp.clip': 0.05, 'uplink.bits': 2,
                    'uplink.transform': 'hadamard', 'uplink.min_size': 10}),
  )
  def test_lossy_uplink_end_to_end_bytes_and_first_round(self, overrides):
    # A lossy codec seeds each client's quantization with a digest of its
    # update's bits (`prng.update_seed`), so float-level differences in the
    # batched training draw other (equally distributed) noise: bytes and
    # the first round's training metrics match exactly, and the codec stage
    # itself is the per-client one (CohortPostProcessingTest).
    task = _task('dense')
    _, ref_m = _run(_settings(1, **overrides), task)
    _, got_m = _run(_settings(3, **overrides), task)
    self.assertEqual(_bytes_up(got_m, True), _bytes_up(ref_m, False))
    for key in ('loss', 'accuracy'):
      self.assertAlmostEqual(float(got_m[0]['client_work']['train'][key]),
                             float(ref_m[0]['client_work']['train'][key]),
                             places=4)

  def _dp_round(self, **overrides):
    """(update norm, zeroed) of one DP round of two cohorts of 3."""
    ts = _settings(3, **{'dp.mode': 'user', 'dp.noise_multiplier': 0.0,
                         'dp.clip': 1e-3, **overrides})
    lp = process.build_training(ts, _task('dense')).process
    state = lp.initialize()
    before = [np.asarray(w) for w in lp.get_model_weights(state).trainable]
    clients = _clients(1)
    data = [cohort_data.cohort_dataset(clients[a:a + 3], batch_size=4,
                                       epochs=1) for a in (0, 3)]
    out = lp.next(state, data)
    after = [np.asarray(w) for w in lp.get_model_weights(out.state).trainable]
    norm = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(after, before)))
    return norm, int(out.metrics['client_work']['zeroed'])

  def test_dp_clips_every_client_before_the_cohort_sum(self):
    # With sigma 0 the mean of K records clipped to C has norm <= C; a
    # cohort sum clipped as one record would allow G*C / K.
    norm, zeroed = self._dp_round(**{'dp.zeroing_norm': 1e6})
    self.assertLessEqual(norm, 1e-3 * (1 + 1e-5))
    self.assertGreater(norm, 1e-4)
    self.assertEqual(zeroed, 0)

  def test_dp_zeroing_counts_each_client(self):
    norm, zeroed = self._dp_round(**{'dp.zeroing_norm': 1e-9})
    self.assertEqual(zeroed, len(SIZES))
    self.assertEqual(norm, 0.0)


class CohortPostProcessingTest(runtime_testing.LocalRuntimeTestCase):
  """The cohort's per-client stages are the per-client aggregator's."""

  @parameterized.named_parameters(
      ('float32', {}),
      ('codec', {'uplink.bits': 2, 'uplink.transform': 'hadamard',
                 'uplink.min_size': 10}),
      ('nan_client', {}, 4),
      ('dp', {'dp.mode': 'user', 'dp.noise_multiplier': 0.0,
              'dp.clip': 0.05, 'dp.zeroing_norm': 0.2}),
      ('dp_codec', {'dp.mode': 'user', 'dp.noise_multiplier': 0.0,
                    'dp.clip': 0.05, 'uplink.bits': 2,
                    'uplink.transform': 'hadamard', 'uplink.min_size': 10}),
      ('dropout_codec', {'dropout.keep': 0.5, 'uplink.bits': 2,
                         'uplink.transform': 'hadamard',
                         'uplink.min_size': 10}),
      ('dropout_dp_codec', {'dropout.keep': 0.5, 'dp.mode': 'user',
                            'dp.noise_multiplier': 0.0, 'dp.clip': 0.05,
                            'uplink.bits': 2, 'uplink.transform': 'hadamard',
                            'uplink.min_size': 10}),
  )
  def test_same_result_as_the_per_client_aggregator(self, overrides,
                                                    nan_client=None):
    ts = _settings(3, **overrides)
    task = _task('dense')
    weights_type = process.build_initial_weights_fn(
        task).type_signature.result
    global_type = weights_type.trainable
    training = process.build_training(ts, task)
    slices, slicing = None, None
    if training.plan is not None:  # each client its own slice
      slicing = dropout_slicing.MaskSlicing(
          training.plan, ts.seed, True, ts.clients_per_round)
      sub_type = process.build_initial_weights_fn(
          training.client_task).type_signature.result
      slices = cohort_work.CohortSlices(slicing, ts.broadcast, sub_type)
      update_type = sub_type.trainable
    else:
      update_type = global_type
    rng = np.random.default_rng(7)
    shapes = [t.shape for t in update_type]
    # Norms spread around the clip and the zeroing norm.
    updates = [[(0.02 * (1 + i) * rng.normal(size=s)).astype(np.float32)
                for s in shapes] for i in range(len(SIZES))]
    if nan_client is not None:
      updates[nan_client][0][0, 0] = np.nan
    examples = np.asarray(SIZES, np.float32)
    weights = (np.ones(len(SIZES), np.float32) if ts.uniform_weights
               else examples.copy())
    # What TFF's client work hands the per-client aggregator: a non-finite
    # update as zeros with weight 0.
    delivered = [list(u) for u in updates]
    if nan_client is not None:
      delivered[nan_client] = [np.zeros_like(t) for t in updates[nan_client]]
      weights[nan_client] = 0.0
    per_client = registry.build_aggregator(
        dataclasses.replace(ts, cohort_size=1), slicing,
        global_type if slicing else None).create(
            update_type, tff.TensorType(np.float32))
    args = [per_client.initialize(), delivered, list(weights)]
    if slicing is not None:
      args.append([np.array([k], np.int32) for k in range(len(SIZES))])
    ref = per_client.next(*args)
    post = cohort_work.CohortPostProcessing(
        process.cohort_spec(ts), update_type, slices, global_type=global_type)
    totals, weight, sent = None, 0.0, 0
    for a in (0, 3):
      stacked = [np.stack([u[j] for u in updates[a:a + 3]])
                 for j in range(len(shapes))]
      total, w, b, _, _ = post(stacked, examples[a:a + 3],
                               np.arange(a, a + 3, dtype=np.int32),
                               tf.constant(0, tf.int64))
      totals = (total if totals is None
                else [t + u for t, u in zip(totals, total)])
      weight, sent = weight + float(w), sent + int(b)
    if slicing is not None:  # per-coordinate mean over the slices
      n = len(totals) // 2
      means = [np.asarray(keyed.count_average(t, c)[0])
               for t, c in zip(totals[:n], totals[n:])]
    else:
      denominator = ts.clients_per_round if ts.dp.user_level else weight
      means = [np.asarray(t) / denominator for t in totals]
    for got, want in zip(means, ref.result):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    self.assertEqual(sent, int(ref.measurements['bytes_up']))
    if nan_client is not None:
      self.assertEqual(weight, float(np.sum(examples)) - SIZES[nan_client])


class CohortConfigTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ('not_a_divisor', {'runtime.cohort_size': 7},
       "'runtime.cohort_size' is 7, which does not divide "
       'clients_per_round=10'),
      ('resnet', {'runtime.cohort_size': 5, 'model.name': 'resnet8'},
       "model.name='resnet8': model 'resnet8_edge' is not a Sequential"),
      ('faults', {'runtime.cohort_size': 5, 'faults.drop_prob': 0.1},
       'with faults.\\* set: cohort execution cannot run it'),
      ('adaptive_clip', {'runtime.cohort_size': 5, 'dp.mode': 'user',
                         'dp.adaptive': True, 'dp.noise_multiplier': 0.0},
       'dp.adaptive set'),
      ('fedprox', {'runtime.cohort_size': 5, 'client.work': 'fedprox'},
       'client.work set'),
  )
  def test_what_cohorts_cannot_run_is_a_one_line_config_error(
      self, overrides, message):
    with self.assertRaisesRegex(config_lib.ConfigError, message) as caught:
      run_utils.default_config(**overrides)
    self.assertNotIn('\n', str(caught.exception))

  def test_dropout_and_dp_are_accepted(self):
    run_utils.default_config(**{'runtime.cohort_size': 5,
                                'dropout.keep': 0.5, 'dp.mode': 'user'})


class BatchedModelTest(parameterized.TestCase):

  @parameterized.parameters('dense', 'caldas_cnn', 'logistic')
  def test_forward_equals_each_clients_keras_model(self, name):
    models = [_task(name).keras_model_fn() for _ in range(3)]
    rng = np.random.default_rng(0)
    for m in models:  # three different weight copies
      m.set_weights([rng.normal(size=w.shape).astype(np.float32)
                     for w in m.get_weights()])
    x = rng.normal(size=(3, 4, *SHAPE)).astype(np.float32)
    stacked = [tf.stack(ws) for ws in zip(
        *[m.trainable_weights for m in models])]
    got = batched_model.BatchedModel(models[0]).forward(stacked, x)
    for g, m in enumerate(models):
      np.testing.assert_allclose(got[g], m(x[g]), rtol=1e-4, atol=1e-5)

  def test_unsupported_layer_is_named(self):
    model = tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=(4,)),
        tf.keras.layers.Dense(3, name='hidden'),
        tf.keras.layers.BatchNormalization(name='bn'),
    ])
    with self.assertRaisesRegex(batched_model.CohortError,
                                'non-trainable weights'):
      batched_model.BatchedModel(model)
    model = tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=(4,)),
        tf.keras.layers.Dropout(0.5, name='drop'),
        tf.keras.layers.Dense(3, name='out'),
    ])
    with self.assertRaisesRegex(batched_model.CohortError,
                                "layer 'drop' \\(Dropout\\)"):
      batched_model.BatchedModel(model)


class CohortDataTest(absltest.TestCase):

  def test_stacked_batches_are_each_clients_batches(self):
    clients = _clients(1)
    stacked = cohort_data.stack_clients(clients, batch_size=4, epochs=2)
    for g, (x, y, seed) in enumerate(clients):
      batches = list(federated_data.make_client_dataset(
          x, y, batch_size=4, epochs=2, shuffle_seed=seed).as_numpy_iterator())
      for s, batch in enumerate(batches):
        rows = len(batch['y'])
        np.testing.assert_array_equal(stacked['mask'][s, g, :rows], 1.0)
        np.testing.assert_array_equal(stacked['mask'][s, g, rows:], 0.0)
        np.testing.assert_array_equal(stacked['x'][s, g, :rows], batch['x'])
        np.testing.assert_array_equal(stacked['y'][s, g, :rows], batch['y'])
      np.testing.assert_array_equal(stacked['mask'][len(batches):, g], 0.0)
    self.assertEqual(stacked['x'].shape[:3],
                     (-(-2 * max(SIZES) // 4), len(SIZES), 4))

  def test_rows_shrink_to_the_largest_client(self):
    # No client can fill a batch of 20: steps carry 2 * 3 rows, not 20.
    rng = np.random.default_rng(0)
    clients = [(rng.normal(size=(n, 2)).astype(np.float32),
                np.zeros(n, np.int32), i) for i, n in enumerate((1, 3, 2))]
    stacked = cohort_data.stack_clients(clients, batch_size=20, epochs=2)
    self.assertEqual(stacked['x'].shape, (1, 3, 6, 2))
    np.testing.assert_array_equal(stacked['mask'].sum(axis=2), [[2, 6, 4]])

  def test_slots_label_every_step_and_bad_input_is_a_data_error(self):
    clients = _clients(1)[:3]
    stacked = cohort_data.stack_clients(clients, batch_size=4, epochs=1,
                                        slots=[7, 0, 4])
    np.testing.assert_array_equal(stacked['slot'],
                                  np.tile([7, 0, 4], (len(stacked['x']), 1)))
    x, y, seed = clients[0]
    for bad, why in (([], 'at least one client'),
                     ([(x[:0], y[:0], seed)], 'non-empty'),
                     ([(x.astype(np.float64), y, seed)], 'float32'),
                     ([(x, y[:-1], seed)], 'do not match'),
                     ([(x[:, :6], y, seed), (x, y, seed)], 'do not match')):
      with self.assertRaisesRegex(federated_data.DataError, why):
        cohort_data.stack_clients(bad, batch_size=4, epochs=1)
    with self.assertRaisesRegex(federated_data.DataError, '2 slots for 3'):
      cohort_data.stack_clients(clients, batch_size=4, epochs=1, slots=[0, 1])

  def test_groups_partition_the_round_by_size(self):
    sizes = [5, 1, 9, 1, 3, 7]
    groups = cohort_data.group(sizes, 2)
    self.assertEqual(sorted(j for g in groups for j in g), list(range(6)))
    self.assertTrue(all(len(g) == 2 for g in groups))
    # Every cohort's largest client is at most the next cohort's smallest.
    for a, b in zip(groups, groups[1:]):
      self.assertLessEqual(max(sizes[j] for j in a),
                           min(sizes[j] for j in b))


if __name__ == '__main__':
  absltest.main()
