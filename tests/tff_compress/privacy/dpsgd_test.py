"""Local DP-SGD client work: equivalence, clipping, noise, NaN, config."""

from absl.testing import absltest
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tests.tff_compress import run_utils
from tests.tff_compress import runtime_testing
from tests.tff_compress.learning import learning_testing
from tff_compress import config_lib
from tff_compress.data import federated_data
from tff_compress.fedavg import process
from tff_compress.privacy import dpsgd


def _cfg(**dp):
  return run_utils.default_config(**{
      'model.name': 'dense', 'client.learning_rate': 0.1,
      'client.batch_size': 8, 'dp.mode': 'sample',
      **{f'dp.{k}': v for k, v in dp.items()}})


def _flat(x):
  return np.concatenate([np.ravel(np.asarray(t)) for t in tf.nest.flatten(x)])


class DpSgdTest(runtime_testing.LocalRuntimeTestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.task = learning_testing.small_task(hidden=16)
    init = process.build_initial_weights_fn(cls.task)
    cls.mw_type = init.type_signature.result
    cls.w0 = init()

  def _run(self, cfg, datasets):
    s = run_utils.settings(cfg)
    work = dpsgd.build_dpsgd_client_work(
        self.task, self.mw_type, s.dp, learning_rate=s.client.learning_rate,
        momentum=s.client.momentum, batch_size=s.client.batch_size)
    return work.next(work.initialize(), [self.w0] * len(datasets), datasets)

  def test_no_noise_huge_clip_equals_tff_local_sgd(self):
    """σ = 0, C = ∞, one example per microbatch: plain SGD on the mean loss."""
    data = learning_testing.random_datasets([20, 13])  # partial last batches
    ours = self._run(_cfg(noise_multiplier=0.0, clip=1e9), data)
    tff_work = tff.learning.templates.build_model_delta_client_work(
        self.task.model_fn, tff.learning.optimizers.build_sgdm(0.1),
        client_weighting=tff.learning.ClientWeighting.UNIFORM)
    ref = tff_work.next(tff_work.initialize(), [self.w0] * 2, data)
    for a, b in zip(ours.result, ref.result):
      np.testing.assert_allclose(_flat(a.update), _flat(b.update), atol=2e-6)
      self.assertEqual(float(a.update_weight), 1.0)
    self.assertAlmostEqual(float(ours.measurements['train']['loss']),
                           float(ref.measurements['train']['loss']), places=5)

  def test_microbatch_gradients_are_clipped(self):
    # Every step's noiseless gradient is a mean of microbatch gradients of
    # norm <= C, so S steps of SGD move the weights by at most S * lr * C.
    # With C far below every gradient norm, each clipped gradient is C times
    # its direction, and the weights barely move: doubling C doubles the
    # update.
    data = learning_testing.random_datasets([24])  # 3 steps of 8
    for microbatches in (0, 2):
      updates = []
      for clip in (1e-3, 2e-3):
        out = self._run(_cfg(noise_multiplier=0.0, clip=clip,
                             microbatches=microbatches), data)
        updates.append(_flat(out.result[0].update))
        self.assertLessEqual(np.linalg.norm(updates[-1]),
                             3 * 0.1 * clip * (1 + 1e-5))
      # (Norm-wise: the update is a difference of float32 weights ~0.1.)
      self.assertLess(np.linalg.norm(updates[1] - 2 * updates[0]),
                      0.01 * np.linalg.norm(updates[1]))

  def test_noise_std(self):
    # One step, 8 single-example microbatches, tiny clip so the noise
    # dominates: each coordinate moves by lr * N(0, (σC)²) / 8.
    clip, sigma = 1e-4, 50.0
    data = learning_testing.random_datasets([8])
    out = self._run(_cfg(noise_multiplier=sigma, clip=clip), data)
    update = _flat(out.result[0].update)
    expected = 0.1 * sigma * clip / 8
    # ~12,700 coordinates; signal <= lr * C = 1e-5 in norm overall.
    self.assertAlmostEqual(update.std() / expected, 1.0, delta=0.03)

  def test_non_finite_update_is_zeroed_with_weight_zero(self):
    x = np.full((8,) + learning_testing.SHAPE, np.nan, np.float32)
    bad = federated_data.make_client_dataset(
        x, np.zeros(8, np.int32), batch_size=8, epochs=1, shuffle_seed=0)
    good = learning_testing.random_datasets([8])[0]
    out = self._run(_cfg(noise_multiplier=1.0, clip=1.0), [bad, good])
    np.testing.assert_array_equal(_flat(out.result[0].update), 0.0)
    self.assertEqual(float(out.result[0].update_weight), 0.0)
    self.assertEqual(float(out.result[1].update_weight), 1.0)
    self.assertTrue(np.isfinite(float(out.measurements['train']['loss'])))


class ConfigTest(absltest.TestCase):

  def test_bad_values_name_the_key(self):
    cases = [
        (dict(noise_multiplier=-0.1), 'dp.noise_multiplier'),
        (dict(clip=0.0), 'dp.clip'),
        (dict(clip=-1.0), 'dp.clip'),
        (dict(delta=0.0), 'dp.delta'),
        (dict(delta=1.0), 'dp.delta'),
        (dict(delta=2.0), 'dp.delta'),
        (dict(microbatches=3), 'dp.microbatches'),  # batch size 8
        (dict(mode='local'), 'dp.mode'),
        (dict(target_quantile=1.0), 'dp.target_quantile'),
    ]
    for overrides, key in cases:
      with self.assertRaisesRegex(config_lib.ConfigError, f"'{key}'",
                                  msg=str(overrides)):
        _cfg(**overrides)
    self.assertEqual(dpsgd.microbatch_size(8, 2), 4)
    self.assertEqual(dpsgd.microbatch_size(8, 0), 1)

  def test_privacy_combinations(self):
    with self.assertRaisesRegex(config_lib.ConfigError,
                                "'dp.noise_multiplier'.*clients_per_round"):
      # noise_multiplier 1 needs clients_per_round > 10
      run_utils.default_config(**{'dp.mode': 'user', 'dp.adaptive': True,
                                  'dp.noise_multiplier': 1.0})
    with self.assertRaisesRegex(config_lib.ConfigError, "'secagg.enabled'"):
      run_utils.default_config(**{'secagg.enabled': True, 'uplink.bits': 2})


if __name__ == '__main__':
  absltest.main()
