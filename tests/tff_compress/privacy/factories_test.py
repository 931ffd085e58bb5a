"""DP-FedAvg, zeroing and secure aggregation inside real TFF processes."""


from absl.testing import absltest
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tests.tff_compress import run_utils
from tests.tff_compress import runtime_testing
from tests.tff_compress.learning import learning_testing
from tff_compress.data import federated_data
from tff_compress.fedavg import process
from tff_compress.privacy import factories
from tff_compress.privacy import secure
from tff_compress.runtime import local as local_runtime

_VEC = tff.TensorType(np.float32, [20000])
_STRUCT = tff.StructWithPythonType(
    [tff.TensorType(np.float32, [5000]), tff.TensorType(np.float32, [7])],
    list)


def _cfg(**kw):
  return run_utils.default_config(
      **{'model.name': 'dense', 'client.learning_rate': 0.1},
      **{key.replace('__', '.'): value for key, value in kw.items()})


def _dp_aggregator(cfg):
  s = run_utils.settings(cfg)
  return factories.build_user_dp_aggregator(
      s.dp, s.secagg, s.uplink, seed=s.run.seed,
      clients_per_round=s.run.clients_per_round)


def _flat(x):
  return np.concatenate([np.ravel(np.asarray(t)) for t in tf.nest.flatten(x)])


class DpAggregatorTest(runtime_testing.LocalRuntimeTestCase):


  def test_noise_calibration(self):
    """Server noise on the mean has std σC/K (statistical, within 2 %)."""
    k, sigma, clip = 4, 0.8, 2.5
    for codec in ({}, dict(uplink__transform='hadamard', uplink__bits=2)):
      cfg = _cfg(dp__mode='user', dp__noise_multiplier=sigma, dp__clip=clip,
                 **codec)
      cfg.clients_per_round = k
      agg = _dp_aggregator(cfg).create(
          _VEC, tff.TensorType(np.float32))
      zeros = [np.zeros(20000, np.float32)] * k
      ones = [np.ones([], np.float32)] * k
      out = agg.next(agg.initialize(), zeros, ones)
      noise = np.asarray(out.result)
      # 20,000 draws: the std estimate's relative s.e. is 0.5 %.
      self.assertAlmostEqual(noise.std() / (sigma * clip / k), 1.0,
                             delta=0.02, msg=codec)
      self.assertLess(abs(noise.mean()), 4 * sigma * clip / k / 141)

  def test_clip_and_unweighted_mean_without_noise(self):
    cfg = _cfg(dp__mode='user', dp__noise_multiplier=0.0, dp__clip=1.0)
    cfg.clients_per_round = 3
    agg = _dp_aggregator(cfg).create(
        _STRUCT, tff.TensorType(np.float32))
    rng = np.random.default_rng(0)
    values = [[rng.normal(size=5000).astype(np.float32) * s,
               rng.normal(size=7).astype(np.float32) * s]
              for s in (1e-3, 0.5, 1.0)]  # norms 0.07, 35, 71 (< zeroing 100)
    out = agg.next(agg.initialize(), values,
                   [np.float32(w) for w in (1, 50, 1000)])
    expected = np.zeros(5007)
    for v in values:
      f = _flat(v)
      expected += f * min(1.0, 1.0 / np.linalg.norm(f))
    np.testing.assert_allclose(_flat(out.result), expected / 3, atol=1e-6)
    self.assertEqual(int(out.measurements['bytes_up']), 3 * 5007 * 4)
    self.assertEqual(int(out.measurements['zeroed']), 0)

  def test_codec_record_has_decoded_norm_at_most_clip(self):
    # One client, no noise: the result is exactly the decoded record.
    for transform, bits in (('hadamard', 1), ('kashin', 2), ('none', 1)):
      cfg = _cfg(dp__mode='user', dp__noise_multiplier=0.0, dp__clip=0.3,
                 uplink__transform=transform, uplink__bits=bits,
                 uplink__subsample=0.5)
      cfg.clients_per_round = 1
      agg = _dp_aggregator(cfg).create(
          _STRUCT, tff.TensorType(np.float32))
      rng = np.random.default_rng(1)
      for scale in (1e-4, 0.5):
        kernel = rng.normal(size=5000).astype(np.float32) * scale
        kernel[:3] *= 30  # outliers widen the quantizer's range
        value = [kernel, rng.normal(size=7).astype(np.float32) * scale]
        out = agg.next(agg.initialize(), [value], [np.float32(1)])
        self.assertLessEqual(np.linalg.norm(_flat(out.result)), 0.3)
        self.assertGreater(np.linalg.norm(_flat(out.result)), 0.0)
        scale_applied = float(out.measurements['bound_scale'])
        self.assertBetween(scale_applied, 0.0, 1.0)
        if scale == 0.5 and bits == 1:
          self.assertLess(scale_applied, 1.0)

  def test_non_finite_and_huge_updates_are_zeroed(self):
    cfg = _cfg(dp__mode='user', dp__noise_multiplier=0.0, dp__clip=1.0,
               dp__zeroing_norm=50.0, uplink__transform='hadamard',
               uplink__bits=4)
    cfg.clients_per_round = 4
    agg = _dp_aggregator(cfg).create(
        _VEC, tff.TensorType(np.float32))
    good = np.full(20000, 1e-3, np.float32)
    nan = good.copy()
    nan[3] = np.nan
    inf = good.copy()
    inf[9] = -np.inf
    huge = np.full(20000, 1.0, np.float32)  # norm 141 > 50
    out = agg.next(agg.initialize(), [good, nan, inf, huge],
                   [np.float32(1)] * 4)
    result = np.asarray(out.result)
    self.assertTrue(np.all(np.isfinite(result)))
    self.assertEqual(int(out.measurements['zeroed']), 3)
    np.testing.assert_allclose(result.mean(), 1e-3 / 4, rtol=0.05)

  def test_adaptive_clip_moves_toward_quantile(self):
    cfg = _cfg(dp__mode='user', dp__adaptive=True, dp__noise_multiplier=0.0,
               dp__clip=0.05, uplink__transform='hadamard', uplink__bits=8)
    cfg.clients_per_round = 5
    agg = _dp_aggregator(cfg).create(
        _VEC, tff.TensorType(np.float32))
    values = [np.full(20000, 0.01, np.float32)] * 5  # norm 1.41 > clip
    state = agg.initialize()
    clips = []
    for _ in range(4):
      out = agg.next(state, values, [np.float32(1)] * 5)
      state = out.state
      clips.append(float(out.measurements['clip']))
      # Records are bounded by the current clip even through the codec.
      self.assertLessEqual(np.linalg.norm(np.asarray(out.result)),
                           clips[-1] * 1.0001)
    self.assertEqual(clips, sorted(clips))  # grows toward the norms
    self.assertGreater(clips[-1], 0.05)


class ProcessTest(absltest.TestCase):

  def test_nan_client_never_poisons_the_model(self):
    task = learning_testing.small_task(hidden=16)
    x = np.full((8,) + learning_testing.SHAPE, np.nan, np.float32)
    bad = federated_data.make_client_dataset(
        x, np.zeros(8, np.int32), batch_size=8, epochs=1, shuffle_seed=0)
    data = learning_testing.random_datasets([8, 16]) + [bad]
    for codec in ({}, dict(uplink__transform='hadamard', uplink__bits=1)):
      cfg = _cfg(dp__mode='user', dp__noise_multiplier=0.1, **codec)
      cfg.clients_per_round = 3
      lp = process.build_learning_process(run_utils.training(cfg), task)
      with local_runtime.local_context():
        state = lp.initialize()
        w0 = _flat(lp.get_model_weights(state).trainable)
        for _ in range(2):
          out = lp.next(state, data)
          state = out.state
          self.assertEqual(int(out.metrics['aggregator']['zeroed']), 1)
        w = _flat(lp.get_model_weights(state).trainable)
      self.assertTrue(np.all(np.isfinite(w)), codec)
      self.assertGreater(np.abs(w - w0).max(), 1e-4)
      self.assertTrue(np.isfinite(
          float(out.metrics['client_work']['train']['loss'])))


class SecureSumTest(absltest.TestCase):

  def test_quantize_unbiased_and_bounded(self):
    x = tf.constant(np.linspace(-0.3, 0.3, 1001), tf.float32)
    total = np.zeros(1001)
    for i in range(200):
      codes, _ = secure.quantize(x, tf.constant([i, 1], tf.int64), 0.5, 4)
      total += secure.dequantize(codes, 0.5, 4).numpy()
    # Step 0.5/7; the mean of 200 roundings is within 4 standard errors.
    np.testing.assert_allclose(total / 200, x.numpy(),
                               atol=4 * (0.5 / 7) / 2 / np.sqrt(200))
    big = tf.constant(np.full(400, 0.09), tf.float32)
    codes, truncated = secure.quantize(big, tf.constant([0, 0], tf.int64),
                                       1.0, 3, l2_bound=1.8)
    # 0.09 / (1/3) = 0.27 steps: truncation (toward zero) gives all zeros
    # whenever stochastic rounding overshoots the bound.
    decoded = secure.dequantize(codes, 1.0, 3).numpy()
    self.assertLessEqual(np.linalg.norm(decoded), 1.8)
    self.assertEqual(float(truncated), 1.0)

  def test_secure_mean_in_process(self):
    task = learning_testing.small_task(hidden=16)
    plain = process.build_learning_process(run_utils.training(
        _cfg(dp__mode='user', dp__noise_multiplier=0.0, dp__clip=100.0)),
                                           task)
    sec = process.build_learning_process(run_utils.training(
        _cfg(dp__mode='user', dp__noise_multiplier=0.0, dp__clip=100.0,
             secagg__enabled=True, secagg__bits=16, secagg__range=0.5)), task)
    data = learning_testing.random_datasets([8, 16, 8])
    with local_runtime.local_context():
      init = plain.initialize()
      w0 = _flat(plain.get_model_weights(init).trainable)
      a = plain.next(init, data)
      b = sec.next(sec.initialize(), data)
      wa, wb = (_flat(p.get_model_weights(o.state).trainable)
                for p, o in ((plain, a), (sec, b)))
    # 16-bit codes over [-0.5, 0.5]: step 1.5e-5, 3 clients, mean over K=10.
    np.testing.assert_allclose(wa, wb, atol=2e-5)
    self.assertGreater(np.abs(wa - w0).max(), 1e-3)
    n = task.num_params
    self.assertEqual(int(b.metrics['aggregator']['bytes_up']),
                     3 * int(np.ceil(n * (16 + 2) / 8)))


if __name__ == '__main__':
  absltest.main()
