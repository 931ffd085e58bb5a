"""The tiered learning process through the TFF runtime: exact per-coordinate
means over tiers, equality with Federated Dropout, bytes per tier, absent
tiers, DP noise added once, fault accounting, the remote-worker feed."""

import collections

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tests.tff_compress import run_utils
from tests.tff_compress import runtime_testing
from tests.tff_compress.learning import learning_testing
from tff_compress.data import federated_data
from tff_compress.faults import schedule
from tff_compress.fedavg import process
from tff_compress.fedavg import registry
from tff_compress.learning import keyed
from tff_compress.learning import task as task_lib
from tff_compress.models import flops
from tff_compress.models import registry as model_registry
from tff_compress.privacy import factories as dp_factories
from tff_compress.runtime import feed as feed_lib
from tff_compress.tiers import process as tier_process
from tff_compress.tiers import rounds as tier_rounds
from tff_compress.tiers import slicing as tier_slicing

SEED = 11
MIX = 'high:1:1.0, mid:1:0.5, low:1:0.25'


def _task(hidden=(12, 8)) -> task_lib.Task:
  """A seeded dense model whose hidden widths can be sliced."""
  def builder(widths, scales=None):
    return model_registry.build_model(
        'dense', learning_testing.SHAPE, 10, hidden=hidden, seed=1,
        widths=dict(widths), scales=scales)
  probe = builder({})
  return task_lib.Task(lambda: builder({}),
                       federated_data.element_spec(learning_testing.SHAPE),
                       flops.count_params(probe),
                       flops.training_flops_per_example(probe), builder)


def _cfg(mix=MIX, slicing='nested', k=4, **overrides):
  return run_utils.default_config(**{
      'model.name': 'dense', 'seed': SEED, 'clients_per_round': k,
      'client.learning_rate': 0.1, 'data.num_clients': 12,
      'tiers.mix': mix, 'tiers.slicing': slicing, **overrides})


def _tiered(cfg, task, num_clients=12):
  return process.build_tiered_training(run_utils.training(cfg), task,
                                       num_clients)


def _flat(weights):
  return [np.asarray(w) for w in tf.nest.flatten(weights)]


def _constant_client_work(sub_weights_type, data_type):
  """Update 0 in every coordinate, weight 1 (DP-FedAvg's uniform weight)."""

  @tff.tensorflow.computation(sub_weights_type.trainable)
  def zeros(like):
    return tf.nest.map_structure(tf.zeros_like, like)

  @tff.federated_computation()
  def init():
    return tff.federated_value((), tff.SERVER)

  @tff.federated_computation(
      init.type_signature.result,
      tff.FederatedType(sub_weights_type, tff.CLIENTS),
      tff.FederatedType(data_type, tff.CLIENTS))
  def next_fn(state, weights, data):
    del data
    return tff.templates.MeasuredProcessOutput(
        state, tff.federated_zip(tff.learning.templates.ClientResult(
            tff.federated_map(zeros, weights.trainable),
            tff.federated_value(np.float32(1.0), tff.CLIENTS))),
        tff.federated_value((), tff.SERVER))

  return tff.learning.templates.ClientWorkProcess(init, next_fn)


def _handmade_process(cfg, task, client_work_fn, noise=None):
  """The tiered process of `cfg` with a handmade client work per tier and
  the registry's partial-sum aggregators; returns (process, tier models)."""
  ts = run_utils.training(cfg)
  initial = process.build_initial_weights_fn(task)
  mw_type = initial.type_signature.result
  data_type = tff.SequenceType(tff.types.tensorflow_to_type(task.input_spec))
  model = task.keras_model_fn()
  pieces, plans = [], []
  for index, tier in enumerate(ts.tiers.tiers):
    plan = tier_slicing.tier_plan(model, tier)
    sub_type = process.build_initial_weights_fn(
        task.with_widths(plan.widths)).type_signature.result
    slicing = tier_slicing.build_slicing(ts.tiers.slicing, plan, SEED, index,
                                         ts.clients_per_round)
    pieces.append(tier_process.TierPieces(
        slicing,
        keyed.build_keyed_distributor(mw_type, sub_type, slicing,
                                      ts.broadcast),
        client_work_fn(sub_type, data_type),
        registry.build_aggregator(ts, slicing, mw_type.trainable,
                                  partial=True).create(
                                      sub_type.trainable,
                                      tff.TensorType(np.float32))))
    plans.append((plan, slicing))
  finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
      tff.learning.optimizers.build_sgdm(1.0), mw_type)
  lp = tier_process.TieredProcess(initial, ts.tiers.names, pieces, finalizer,
                                  noise)
  return lp, plans


def _expected_update(plans, clients, round_num=1):
  """Per coordinate Σ_i n_i m_ij n_i / Σ_i n_i m_ij over every client
  (tier, slot, n) of every tier (update n everywhere, weight n)."""
  num = den = None
  for tier, slot, n in clients:
    plan, slicing = plans[tier]
    key = slicing.mask_key(tf.constant(slot))
    cover = [c.numpy() for c in slicing.coverage(
        tf.constant(round_num, tf.int64), key)]
    if num is None:
      num = [np.zeros_like(c) for c in cover]
      den = [np.zeros_like(c) for c in cover]
    for j, c in enumerate(cover):
      num[j] += n * c * n
      den[j] += n * c
  return [np.where(d > 0, s / np.maximum(d, 1e-30), 0.0)
          for s, d in zip(num, den)], den


class TieredProcessTest(runtime_testing.LocalRuntimeTestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.task = _task()

  @parameterized.named_parameters(('nested', 'nested'), ('random', 'random'),
                                  ('random_per_round', 'random_per_round'))
  def test_per_coordinate_mean_over_tiers_is_exact(self, slicing):
    """Handmade updates (n_i everywhere, weight n_i) of clients in three
    tiers: every coordinate moves by the weighted mean over the clients,
    of every tier, that trained it; untrained ones do not move."""
    cfg = _cfg(slicing=slicing, k=5)
    lp, plans = _handmade_process(cfg, self.task,
                                  learning_testing.count_client_work)
    sizes = [3, 10, 5, 7, 4]
    tiers = [0, 2, 1, 2, 1]
    state = lp.initialize()
    before = _flat(lp.get_model_weights(state).trainable)
    inputs = [[] for _ in plans]
    for slot, (ds, t) in enumerate(zip(
        learning_testing.random_datasets(sizes), tiers)):
      inputs[t].append(collections.OrderedDict(
          key=np.array([slot], np.int32), data=ds))
    out = lp.next(state, inputs)
    after = _flat(lp.get_model_weights(out.state).trainable)
    expected, den = _expected_update(
        plans, [(t, slot, n) for slot, (t, n) in enumerate(zip(tiers, sizes))])
    for b, a, e, c in zip(before, after, expected, den):
      np.testing.assert_allclose(b - a, e, rtol=1e-6, atol=1e-6)
      np.testing.assert_array_equal(a[c == 0], b[c == 0])
    untrained = sum(int((c == 0).sum()) for c in den)
    self.assertAlmostEqual(
        float(out.metrics['aggregator']['untrained_fraction']),
        untrained / sum(w.size for w in before), places=6)
    self.assertEqual([out.metrics['tiers'][n]['clients'] for n in lp.names],
                     [1, 2, 2])

  @parameterized.named_parameters(('per_client', 'random', 'per_client'),
                                  ('per_round', 'random_per_round',
                                   'per_round'))
  def test_one_random_tier_is_federated_dropout_bit_for_bit(self, slicing,
                                                            mask):
    tiered = _tiered(_cfg(mix='only:1:0.5', slicing=slicing, k=3), self.task)
    dropout = process.build_training(run_utils.training(run_utils.default_config(**{
        'model.name': 'dense', 'seed': SEED, 'clients_per_round': 3,
        'client.learning_rate': 0.1, 'dropout.keep': 0.5,
        'dropout.mask': mask})), self.task)
    data = learning_testing.random_datasets([12, 30, 7])
    s_t, s_d = tiered.process.initialize(), dropout.process.initialize()
    for _ in range(2):
      out_t = tiered.process.next(s_t, tiered.tier_inputs(data, [0, 0, 0]))
      out_d = dropout.process.next(s_d, dropout.client_inputs(data))
      s_t, s_d = out_t.state, out_d.state
    for a, b in zip(_flat(tiered.process.get_model_weights(s_t)),
                    _flat(dropout.process.get_model_weights(s_d))):
      np.testing.assert_array_equal(a, b)
    m_t, m_d = out_t.metrics, out_d.metrics
    for path in (('distributor', 'bytes_down'), ('aggregator', 'bytes_up'),
                 ('aggregator', 'untrained_fraction')):
      self.assertEqual(float(m_t[path[0]][path[1]]),
                       float(m_d[path[0]][path[1]]), path)
    for name in ('loss', 'accuracy'):
      self.assertEqual(float(m_t['client_work']['train'][name]),
                       float(m_d['client_work']['train'][name]))

  def test_bytes_are_those_of_each_tiers_model(self):
    tiered = _tiered(_cfg(), self.task)
    params = [t.task.num_params for t in tiered.tiers]
    self.assertGreater(params[0], 1.9 * params[1])
    self.assertGreater(params[1], 1.9 * params[2])
    data = learning_testing.random_datasets([4, 6, 5, 8])
    out = tiered.process.next(tiered.process.initialize(),
                              tiered.tier_inputs(data, [2, 0, 2, 1]))
    per_tier = out.metrics['tiers']
    for name, p, n in zip(tiered.names, params, (1, 1, 2)):
      self.assertEqual(int(per_tier[name]['distributor']['bytes_down']),
                       n * 4 * p)
      self.assertEqual(int(per_tier[name]['aggregator']['bytes_up']),
                       n * (4 * p + 4))
    self.assertEqual(int(out.metrics['distributor']['bytes_down']),
                     4 * (params[0] + params[1] + 2 * params[2]))

  def test_a_tier_without_clients_keeps_the_round(self):
    """A tier nobody of this round belongs to still advances its pieces'
    round counters, so its next masks are those of the global round."""
    tiered = _tiered(_cfg(slicing='random', k=3), self.task)
    state = tiered.process.initialize()
    data = learning_testing.random_datasets([4, 6, 5])
    out = tiered.process.next(state, tiered.tier_inputs(data, [0, 0, 1]))
    self.assertEqual(out.metrics['tiers']['low']['clients'], 0)
    self.assertEqual(int(out.metrics['tiers']['low']['distributor'][
        'bytes_down']), 0)
    self.assertEqual([int(s) for s in out.state.distributor], [2, 2, 2])
    self.assertEqual([int(s['round']) for s in out.state.aggregator],
                     [2, 2, 2])

  def test_dp_noise_is_added_once_to_the_total(self):
    """Zero updates from three tiers under DP-FedAvg: the round's update is
    the noise over the counts, and the noise has std σC — added once to the
    total, not once per tier (which would give √3 σC)."""
    cfg = _cfg(k=3, **{'dp.mode': 'user', 'dp.clip': 0.5,
                       'dp.noise_multiplier': 2.0})
    task = _task(hidden=(512,))
    lp, plans = _handmade_process(
        cfg, task, _constant_client_work,
        noise=dp_factories.gaussian_noise(run_utils.training(cfg).dp))
    data = learning_testing.random_datasets([4, 6, 5])
    state = lp.initialize()
    before = _flat(lp.get_model_weights(state).trainable)
    inputs = [[collections.OrderedDict(key=np.array([t], np.int32),
                                       data=data[t])] for t in range(3)]
    after = _flat(lp.get_model_weights(lp.next(state, inputs).state)
                  .trainable)
    _, counts = _expected_update(plans, [(t, t, 1) for t in range(3)])
    noise = np.concatenate([((b - a) * c).ravel()
                            for b, a, c in zip(before, after, counts)])
    self.assertGreater(noise.size, 300_000)
    self.assertAlmostEqual(float(noise.std()) / (2.0 * 0.5), 1.0, delta=0.02)
    self.assertAlmostEqual(float(noise.mean()), 0.0, delta=0.01)

  def test_fault_round_accounts_bytes_per_tier(self):
    """A sampled tier whose only client dropped is probed for its bytes;
    every sampled client counts its own tier's message."""
    tiered = _tiered(_cfg(**{'faults.drop_prob': 0.5}), self.task)
    sampled = np.array([0, 1, 2, 3])
    tiers = tiered.assignment[sampled]
    # One client of each tier present; make the 'low' one(s) drop.
    dropped = tiers == 2
    plan = schedule.RoundPlan(
        sampled=sampled, dropped=dropped, codes=np.zeros(4, np.int32),
        latency=np.zeros(4), reporting=~dropped, late=np.zeros(4, bool),
        round_latency=1.0, skipped=False)
    data = learning_testing.random_datasets([4, 6, 5, 8])
    state = tiered.process.initialize()
    result = tier_rounds.run_round(tiered, state, plan, data)
    params = [t.task.num_params for t in tiered.tiers]
    counts = [int((tiers == t).sum()) for t in range(3)]
    self.assertEqual(result.outcome.bytes_down,
                     sum(4 * p * c for p, c in zip(params, counts)))
    self.assertEqual(result.outcome.bytes_up,
                     sum((4 * p + 4) * c for p, c, t in
                         zip(params, counts, range(3)) if t != 2))
    self.assertEqual([f.reported for f in result.tiers],
                     [c if t != 2 else 0 for t, c in enumerate(counts)])

  def test_skipped_round_keeps_the_state(self):
    tiered = _tiered(_cfg(), self.task)
    sampled = np.array([0, 1, 2, 3])
    plan = schedule.RoundPlan(
        sampled=sampled, dropped=np.zeros(4, bool),
        codes=np.zeros(4, np.int32), latency=np.zeros(4),
        reporting=np.array([True, False, False, False]),
        late=np.array([False, True, True, True]), round_latency=1.0,
        skipped=True)
    state = tiered.process.initialize()
    result = tier_rounds.run_round(
        tiered, state, plan, learning_testing.random_datasets([4, 6, 5, 8]))
    self.assertIs(result.outcome.state, state)
    self.assertGreater(result.outcome.bytes_up, 0)

  def test_train_only_leaves_the_other_tiers_out(self):
    tiered = _tiered(_cfg(**{'tiers.train_only': 'low'}), self.task)
    sampled = np.arange(6)
    tiers = tiered.assignment[sampled]
    plan = schedule.plan_round(run_utils.training(_cfg()).faults, SEED, 1,
                               sampled, [10] * 6, 6)
    result = tier_rounds.run_round(
        tiered, tiered.process.initialize(), plan,
        learning_testing.random_datasets([4] * 6))
    self.assertEqual(result.clients, int((tiers == 2).sum()))
    self.assertEqual([f.sampled for f in result.tiers[:2]], [0, 0])
    low = tiered.tiers[2].task.num_params
    self.assertEqual(result.outcome.bytes_down, 4 * low * result.clients)

  def test_remote_feed_composition(self):
    """The passes composed with a client-data builder, as the remote-worker
    feed composes them (`runtime/feed.py`), compute the same rounds from
    descriptors as the process does from the datasets."""
    tiered = _tiered(_cfg(), self.task)
    descriptor_type = tff.to_type(collections.OrderedDict(
        value=np.float32, n=np.int32))

    def make(d):
      n = d['n']
      return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
          x=tf.fill([n, 28, 28, 1], d['value']),
          y=tf.math.floormod(tf.range(n), 10))).batch(8)

    composed = tiered.process.compose_client_data(
        lambda next_fn: feed_lib.compose(next_fn, descriptor_type, make))
    descriptors = [collections.OrderedDict(value=np.float32(v), n=np.int32(n))
                   for v, n in ((0.25, 9), (0.5, 5), (0.75, 12))]
    datasets = [make(d) for d in descriptors]
    tiers = [1, 2, 1]
    states = [tiered.process.initialize()] * 2
    for _ in range(2):
      states = [
          tiered.process.next(states[0], tiered.tier_inputs(datasets, tiers))
          .state,
          composed.next(states[1], tiered.tier_inputs(descriptors, tiers))
          .state]
    for a, b in zip(_flat(states[0]), _flat(states[1])):
      np.testing.assert_array_equal(a, b)
    self.assertEqual(tf.nest.map_structure(lambda _: 0, states[0]),
                     tf.nest.map_structure(lambda _: 0, states[1]))


if __name__ == '__main__':
  absltest.main()
