"""One contract for every aggregation factory the registry can build.

For each combination of uplink codec, zeroing (client faults), DP-FedAvg
(fixed and adaptive clipping), secure aggregation and Federated Dropout
slices that `fedavg.registry.build_aggregator` can return:

* types: `create(value_type, float32)` binds, `next` returns a value of
  `value_type` (the mean update, global shape);
* the measurement schema: `bytes_up` (int64, > 0) at the top level, every
  other standard name with its standard dtype, `zeroed` exactly when a
  stage zeroes;
* maths where it is deterministic (no codec, no noise): the
  example-weighted, per-coordinate or uniform mean of the inputs;
* the non-keyed ones run inside TFF's own `build_weighted_fed_avg`.

Plus the toolkit's own guarantees: `wrap` keeps the inner weighting and
zeroing removes a bad client from a weighted mean.
"""

import collections

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tests.tff_compress import run_utils
from tests.tff_compress import runtime_testing
from tests.tff_compress.learning import learning_testing
from tff_compress.dropout import slicing as dropout_slicing
from tff_compress.dropout import submodel
from tff_compress.fedavg import process
from tff_compress.fedavg import registry
from tff_compress.learning import aggregators

_DTYPES = {'bytes_up': np.int64, 'zeroed': np.int32,
           'bound_scale': np.float32, 'clip': np.float32,
           'untrained_fraction': np.float32}
_CODEC = {'uplink.transform': 'hadamard', 'uplink.bits': 4,
          'uplink.min_size': 100}
_DP = {'dp.mode': 'user', 'dp.noise_multiplier': 0.0, 'dp.clip': 0.5}
_CASES = {
    'mean': {},
    'codec': _CODEC,
    'faults': {'faults.drop_prob': 0.1},
    'faults_codec': {'faults.nan_prob': 0.1, **_CODEC},
    'dp_fixed': _DP,
    'dp_fixed_codec': {**_DP, **_CODEC},
    'dp_adaptive_codec': {**_DP, 'dp.adaptive': True, **_CODEC},
    'secagg': {'secagg.enabled': True},
    'dp_secagg': {**_DP, 'secagg.enabled': True},
}
_ZEROES = {'faults', 'faults_codec', 'dp_fixed', 'dp_fixed_codec',
           'dp_adaptive_codec', 'secagg', 'dp_secagg'}
_EXACT = {'mean', 'faults', 'dp_fixed', 'secagg', 'dp_secagg'}
_K = 3
_SEED = 5


def _training(overrides, keep=1.0):
  return run_utils.training(run_utils.default_config(**{
      'model.name': 'dense', 'clients_per_round': _K, 'seed': _SEED,
      'dropout.keep': keep, **overrides}))


def _inputs(value_type, scale=1e-3):
  rng = np.random.default_rng(0)
  values = [[rng.normal(size=t.shape).astype(np.float32) * scale
             for t in value_type] for _ in range(_K)]
  return values, [np.float32(w) for w in (3.0, 1.0, 4.0)]


class AggregatorContractTest(runtime_testing.LocalRuntimeTestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.task = learning_testing.small_task(hidden=16)
    cls.mw_type = process.build_initial_weights_fn(
        cls.task).type_signature.result

  def _check_schema(self, measurements, zeroes: bool):
    for name, dtype in _DTYPES.items():
      if name in measurements:
        self.assertEqual(np.asarray(measurements[name]).dtype, dtype, name)
    self.assertGreater(int(measurements['bytes_up']), 0)
    self.assertEqual('zeroed' in measurements, zeroes)

  @parameterized.named_parameters((n, n) for n in sorted(_CASES))
  def test_global_mean(self, name):
    ts = _training(_CASES[name])
    value_type = self.mw_type.trainable
    agg = registry.build_aggregator(ts).create(value_type,
                                               tff.TensorType(np.float32))
    values, weights = _inputs(value_type)
    out = agg.next(agg.initialize(), values, weights)
    self._check_schema(out.measurements, name in _ZEROES)
    result = [np.asarray(r) for r in out.result]
    self.assertEqual([r.shape for r in result],
                     [tuple(t.shape) for t in value_type])
    self.assertTrue(all(np.isfinite(r).all() for r in result))
    if name in _EXACT:
      uniform = name != 'mean' and name != 'faults'
      w = np.ones(_K) if uniform else np.asarray(weights)
      # DP-FedAvg divides by K; the (secure) means by the client count.
      denominator = w.sum()
      for j, r in enumerate(result):
        expected = sum(wi * v[j] for wi, v in zip(w, values)) / denominator
        # 16-bit secure codes over [-1, 1]: one step is 1 / 32767.
        tol = 1.0 / 32767 if 'secagg' in name else 1e-6
        np.testing.assert_allclose(r, expected, atol=tol)
    if name == 'dp_adaptive_codec':
      self.assertIn('clip', out.measurements)
    if 'dp_fixed_codec' == name:
      self.assertBetween(float(out.measurements['bound_scale']), 0.0, 1.0)

  @parameterized.named_parameters(
      (n, n) for n in sorted(_CASES) if n != 'dp_secagg')
  def test_runs_inside_tff_build_weighted_fed_avg(self, name):
    ts = _training(_CASES[name])
    lp = tff.learning.algorithms.build_weighted_fed_avg(
        self.task.model_fn,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1),
        model_aggregator=registry.build_aggregator(ts))
    out = lp.next(lp.initialize(),
                  learning_testing.random_datasets([8, 5, 11]))
    self.assertIn('bytes_up', out.metrics['aggregator'])
    weights = lp.get_model_weights(out.state)
    self.assertTrue(all(np.isfinite(w).all()
                        for w in tf.nest.flatten(weights)))

  @parameterized.named_parameters(
      (n, n) for n in ('mean', 'codec', 'faults_codec', 'dp_fixed_codec',
                       'dp_adaptive_codec', 'secagg'))
  def test_keyed_per_coordinate_mean(self, name):
    ts = _training(_CASES[name], keep=0.5)
    plan = process.dropout_plan(ts, self.task)
    slicing = dropout_slicing.MaskSlicing(plan, _SEED, True, _K)
    global_type = self.mw_type.trainable
    sub_type = tff.StructWithPythonType(
        [tff.TensorType(np.float32, s) for s in plan.sub_shapes()], list)
    agg = registry.build_aggregator(ts, slicing, global_type).create(
        sub_type, tff.TensorType(np.float32))
    values, weights = _inputs(sub_type)
    slots = [np.array([k], np.int32) for k in range(_K)]
    out = agg.next(agg.initialize(), values, weights, slots)
    self._check_schema(out.measurements, name in _ZEROES)
    self.assertBetween(float(out.measurements['untrained_fraction']), 0, 1)
    result = [np.asarray(r) for r in out.result]
    self.assertEqual([r.shape for r in result],
                     [tuple(t.shape) for t in global_type])
    self.assertTrue(all(np.isfinite(r).all() for r in result))
    if name == 'mean':  # per coordinate, over the clients that trained it
      num = [np.zeros(r.shape) for r in result]
      den = [np.zeros(r.shape) for r in result]
      for k, (v, w) in enumerate(zip(values, weights)):
        kept = plan.kept_indices(submodel.mask_seed(_SEED, 1, k))
        for j, (u, c) in enumerate(zip(plan.scatter(v, kept),
                                       plan.coverage(kept))):
          num[j] += w * np.asarray(u)
          den[j] += w * np.asarray(c)
      for r, n, d in zip(result, num, den):
        np.testing.assert_allclose(
            r, np.where(d > 0, n / np.maximum(d, 1e-30), 0), atol=1e-6)


class ToolkitTest(runtime_testing.LocalRuntimeTestCase):


  def test_wrappers_keep_the_inner_weighting(self):
    weighted = aggregators.zeroing(1.0, tff.aggregators.MeanFactory())
    unweighted = aggregators.zeroing(1.0, tff.aggregators.SumFactory())
    self.assertIsInstance(weighted,
                          tff.aggregators.WeightedAggregationFactory)
    self.assertIsInstance(unweighted,
                          tff.aggregators.UnweightedAggregationFactory)
    for factory in (aggregators.with_bytes_up(tff.aggregators.SumFactory()),
                    aggregators.encoded(
                        run_utils.settings(run_utils.default_config())
                        .uplink, 0, tff.aggregators.SumFactory())):
      self.assertIsInstance(factory,
                            tff.aggregators.UnweightedAggregationFactory)
    with self.assertRaises(TypeError):
      aggregators.wrap(object(), lambda v, w: None)

  def test_bad_clients_leave_the_weighted_mean(self):
    value_type = tff.TensorType(np.float32, (3,))
    agg = aggregators.zeroing(10.0, aggregators.build_mean()).create(
        value_type, tff.TensorType(np.float32))
    values = [np.array([1., 2., 3.], np.float32),
              np.array([np.nan, 0., 0.], np.float32),
              np.array([20., 0., 0.], np.float32),   # norm 20 > 10
              np.array([-1., 0., 1.], np.float32),
              np.array([5., 5., 5.], np.float32)]    # weight 0 on arrival
    weights = [2.0, 7.0, 5.0, 1.0, 0.0]
    out = agg.next(agg.initialize(), values, weights)
    expected = (2 * values[0] + 1 * values[3]) / 3
    np.testing.assert_allclose(out.result, expected, rtol=1e-6)
    self.assertEqual(out.measurements['zeroed'], 3)
    # bytes_up of every client that sent: 3 floats + its weight.
    self.assertEqual(out.measurements['bytes_up'], 5 * 16)

  def test_unweighted_zeroing_counts_without_weights(self):
    value_type = tff.TensorType(np.float32, (2,))
    agg = aggregators.zeroing(5.0, tff.aggregators.SumFactory()).create(
        value_type)
    out = agg.next(agg.initialize(), [np.array([1., 1.], np.float32),
                                      np.array([np.inf, 0.], np.float32)])
    np.testing.assert_array_equal(out.result, [1., 1.])
    self.assertEqual(int(out.measurements['zeroed']), 1)

  def test_standard_measurements_are_lifted_to_the_top(self):
    """zeroing(encoded(mean)): the codec's `bytes_up` is read at the top,
    the inner measurements stay under `inner`."""
    value_type = tff.TensorType(np.float32, (2000,))
    codec = run_utils.settings(run_utils.default_config(**{
        'uplink.transform': 'hadamard', 'uplink.bits': 2})).uplink
    agg = aggregators.zeroing(
        100.0, aggregators.encoded(codec, 0)).create(
            value_type, tff.TensorType(np.float32))
    out = agg.next(agg.initialize(),
                   [np.full(2000, 0.01, np.float32)] * 2, [1.0, 2.0])
    self.assertEqual(int(out.measurements['bytes_up']),
                     int(out.measurements['inner']['bytes_up']))
    # 2 bits per coordinate, min/max, the seed and the weight, per client.
    self.assertLess(int(out.measurements['bytes_up']), 2 * (2000 // 4 + 200))
    self.assertEqual(int(out.measurements['zeroed']), 0)


if __name__ == '__main__':
  absltest.main()
