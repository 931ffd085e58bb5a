"""ε accounting vs independent dp-accounting and tensorflow-privacy numbers."""

import math

from absl.testing import absltest
from absl.testing import parameterized
import dp_accounting
from dp_accounting import pld
from dp_accounting import rdp
import numpy as np
from tensorflow_privacy.privacy.analysis import compute_dp_sgd_privacy_lib

from tests.tff_compress import run_utils
from tff_compress.privacy import accounting


def _independent_wor(n, k, sigma, rounds, delta):
  """Composition round by round, replace-one, sensitivity 2C."""
  acc = rdp.RdpAccountant(
      neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
  for _ in range(rounds):
    acc.compose(dp_accounting.SampledWithoutReplacementDpEvent(
        n, k, dp_accounting.GaussianDpEvent(sigma / 2)))
  return acc.get_epsilon(delta)


class UserLevelTest(parameterized.TestCase):

  @parameterized.parameters((1000, 50, 1.0, 8, 1e-5), (500, 10, 0.7, 6, 1e-3),
                            (100, 100, 2.0, 5, 1e-5), (1000, 20, 1.3, 3, 1e-6))
  def test_uniform_matches_independent_composition(self, n, k, sigma, rounds,
                                                   delta):
    ours = accounting.user_level_epsilon(n, k, sigma, rounds, delta)
    self.assertAlmostEqual(ours, _independent_wor(n, k, sigma, rounds, delta),
                           delta=1e-9 * ours)

  @parameterized.parameters((60000, 256, 1.1, 60, 1e-5),
                            (1000, 50, 1.0, 30, 1e-5))
  def test_poisson_matches_tensorflow_privacy(self, n, k, sigma, rounds,
                                              delta):
    # compute_dp_sgd_privacy(n, batch, σ, epochs, δ) composes
    # ceil(epochs n / batch) Poisson(batch/n) Gaussians: one per round when
    # epochs = rounds k / n. It uses coarser RDP orders, so ours (finer
    # orders) may only be lower, and not by much.
    tfp_eps, _ = compute_dp_sgd_privacy_lib.compute_dp_sgd_privacy(
        n=n, batch_size=k, noise_multiplier=sigma, epochs=rounds * k / n,
        delta=delta)
    ours = accounting.user_level_epsilon(n, k, sigma, rounds, delta,
                                         sampling='poisson')
    self.assertLessEqual(ours, tfp_eps * (1 + 1e-9))
    self.assertGreater(ours, 0.97 * tfp_eps)

  def test_poisson_rdp_close_to_pld(self):
    # Independent accountant: PLD is tighter than RDP, never far below.
    ours = accounting.user_level_epsilon(1000, 50, 1.0, 30, 1e-5,
                                         sampling='poisson')
    acc = pld.PLDAccountant()
    acc.compose(dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(
            0.05, dp_accounting.GaussianDpEvent(1.0)), 30))
    self.assertBetween(acc.get_epsilon(1e-5), 0.6 * ours, ours)

  def test_monotone_and_edge_cases(self):
    eps = [accounting.user_level_epsilon(1000, 50, 1.0, r, 1e-5)
           for r in (1, 2, 10, 30)]
    self.assertEqual(eps, sorted(eps))
    self.assertGreater(accounting.user_level_epsilon(1000, 50, 0.7, 10, 1e-5),
                       accounting.user_level_epsilon(1000, 50, 1.5, 10, 1e-5))
    self.assertGreater(accounting.user_level_epsilon(1000, 100, 1.0, 10, 1e-5),
                       accounting.user_level_epsilon(1000, 10, 1.0, 10, 1e-5))
    self.assertEqual(accounting.user_level_epsilon(100, 10, 0.0, 3, 1e-5),
                     math.inf)
    # Uniform (replace-one, 2C) is never below the Poisson approximation.
    self.assertGreater(accounting.user_level_epsilon(1000, 50, 1.0, 10, 1e-5),
                       accounting.user_level_epsilon(1000, 50, 1.0, 10, 1e-5,
                                                     sampling='poisson'))
    with self.assertRaises(accounting.AccountingError):
      accounting.user_level_epsilon(100, 10, 1.0, 3, 1.0)
    with self.assertRaises(accounting.AccountingError):
      accounting.user_level_epsilon(10, 11, 1.0, 3, 1e-5)


class SampleLevelTest(parameterized.TestCase):

  @parameterized.parameters((100, 10, 1.1, 5), (600, 20, 0.8, 3))
  def test_matches_compute_dp_sgd_privacy(self, n, batch, sigma, rounds):
    # One client holding n examples in every round, one example per
    # microbatch, 1 local epoch: rounds * n / B Poisson(B/n) steps.
    ours = accounting.sample_level_epsilon(
        [n], [rounds], batch_size=batch, epochs=1, noise_multiplier=sigma,
        microbatch_size=1, delta=1e-5)
    tfp_eps, _ = compute_dp_sgd_privacy_lib.compute_dp_sgd_privacy(
        n=n, batch_size=batch, noise_multiplier=sigma, epochs=rounds,
        delta=1e-5)
    self.assertLessEqual(ours, tfp_eps * (1 + 1e-9))
    self.assertGreater(ours, 0.97 * tfp_eps)

  def test_microbatching_halves_the_noise_multiplier(self):
    kw = dict(batch_size=10, epochs=2, delta=1e-5)
    self.assertAlmostEqual(
        accounting.sample_level_epsilon([80], [3], noise_multiplier=1.2,
                                        microbatch_size=2, **kw),
        accounting.sample_level_epsilon([80], [3], noise_multiplier=0.6,
                                        microbatch_size=1, **kw))

  def test_max_over_clients_and_participation(self):
    kw = dict(batch_size=10, epochs=1, noise_multiplier=1.0,
              microbatch_size=1, delta=1e-5)
    single = [accounting.sample_level_epsilon([n], [r], **kw)
              for n, r in ((40, 1), (200, 2), (15, 4))]
    self.assertAlmostEqual(
        accounting.sample_level_epsilon([40, 200, 15, 99], [1, 2, 4, 0], **kw),
        max(single))
    self.assertEqual(accounting.sample_level_epsilon([40], [0], **kw), 0.0)


class RunAccountantTest(absltest.TestCase):

  def _accountant(self, sizes, **dp):
    s = run_utils.settings(run_utils.default_config(
        clients_per_round=5, **{f'dp.{k}': v for k, v in dp.items()}))
    return accounting.RunAccountant(
        s.dp, clients_per_round=s.run.clients_per_round,
        batch_size=s.client.batch_size, epochs=s.client.epochs,
        client_sizes=tuple(sizes))

  def test_modes(self):
    sizes = [10] * 50
    none = self._accountant(sizes)
    self.assertIsNone(none.epsilon(3))
    user = self._accountant(sizes, mode='user')
    self.assertAlmostEqual(user.epsilon(4),
                           accounting.user_level_epsilon(50, 5, 1.0, 4, 1e-5))
    st = user.statement(4)
    self.assertEqual(st['neighbouring'], 'replace-one client')
    self.assertLess(st['epsilon_poisson_approximation'], st['epsilon'])
    sample = self._accountant(sizes, mode='sample', microbatches=5)
    self.assertEqual(sample.microbatch_size, 4)
    counts = np.zeros(50, int)
    counts[:5] = 2
    self.assertAlmostEqual(
        sample.epsilon(2, counts),
        accounting.sample_level_epsilon([10], [2], 20, 1, 1.0, 4, 1e-5))


if __name__ == '__main__':
  absltest.main()
