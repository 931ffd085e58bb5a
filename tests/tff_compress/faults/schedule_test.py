"""Fault draws, over-selection and deadline: invariants, determinism, config."""

import math

# Keras 2.14 must be imported before absl parses flags (see tff_compress/cli.py).
import tensorflow  # pylint: disable=unused-import
from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from tests.tff_compress import run_utils
from tff_compress import config_lib
from tff_compress.faults import schedule
from tff_compress.faults import settings as fault_settings

_SPEC = fault_settings.FaultSettings(
    drop_prob=0.2, nan_prob=0.1, huge_prob=0.05, over_select=0.5,
    deadline=14.0, latency_median=10.0, latency_sigma=0.5,
    seconds_per_example=0.01, min_reports=4)


def _plan(spec, round_num, k=8, seed=3):
  n = spec.num_sampled(k)
  rng = np.random.default_rng(round_num)
  sampled = np.sort(rng.choice(100, n, replace=False))
  examples = [int(e) for e in rng.integers(10, 400, n)]
  return schedule.plan_round(spec, seed, round_num, sampled, examples, k), k


class ScheduleTest(parameterized.TestCase):

  @parameterized.parameters((10, 0.0, 10), (10, 0.3, 13), (10, 0.25, 13),
                            (7, 0.1, 8), (20, 1.0, 40), (3, 0.34, 5))
  def test_num_sampled(self, k, x, n):
    self.assertEqual(fault_settings.FaultSettings(over_select=x).num_sampled(k), n)

  def test_inactive_spec_everyone_reports(self):
    spec = fault_settings.FaultSettings()
    self.assertFalse(spec.active)
    plan = schedule.plan_round(spec, 0, 1, [4, 9, 2], [10, 20, 30], 3)
    self.assertEqual(plan.num_reported, 3)
    self.assertEqual((plan.num_dropped, plan.num_late, plan.num_poisoned),
                     (0, 0, 0))
    self.assertIsNone(plan.round_latency)
    self.assertFalse(plan.skipped)

  def test_invariants(self):
    for r in range(1, 200):
      plan, k = _plan(_SPEC, r)
      n = plan.num_sampled
      self.assertEqual(n, 12)
      self.assertEqual(plan.num_reported + plan.num_dropped + plan.num_late, n)
      self.assertLessEqual(plan.num_reported, k)
      self.assertFalse((plan.reporting & plan.dropped).any())
      reported = plan.latency[plan.reporting]
      self.assertTrue((reported <= _SPEC.deadline).all())
      # Reporters are the fastest on-time clients: no late client that was
      # on time is faster than a reporter.
      on_time_late = plan.late & (plan.latency <= _SPEC.deadline)
      if on_time_late.any():
        self.assertEqual(plan.num_reported, k)
        self.assertLessEqual(reported.max(),
                             plan.latency[on_time_late].min())
      if plan.num_reported == k:
        self.assertEqual(plan.round_latency, reported.max())
      else:
        self.assertEqual(plan.round_latency, _SPEC.deadline)
      self.assertEqual(plan.skipped, plan.num_reported < _SPEC.min_reports)
      self.assertEqual(plan.num_poisoned,
                       int((plan.reporter_codes != schedule.OK).sum()))

  def test_no_deadline_closes_at_last_report(self):
    spec = fault_settings.FaultSettings(drop_prob=0.5, latency_sigma=1.0)
    for r in range(1, 50):
      plan, k = _plan(spec, r)
      self.assertEqual(plan.num_late, 0)  # n = k: nobody is surplus
      if plan.num_reported:
        self.assertEqual(plan.round_latency,
                         plan.latency[plan.reporting].max())
      else:
        self.assertEqual(plan.round_latency, 0.0)
      del k

  def test_draws_are_per_client_and_deterministic(self):
    a = schedule.plan_round(_SPEC, 1, 5, [3, 7, 11], [50, 60, 70], 2)
    b = schedule.plan_round(_SPEC, 1, 5, [7, 40, 41, 42], [60, 1, 2, 3], 2)
    # Client 7 draws the same whatever else was sampled.
    self.assertEqual(a.dropped[1], b.dropped[0])
    self.assertEqual(a.codes[1], b.codes[0])
    self.assertEqual(a.latency[1], b.latency[0])
    again = schedule.plan_round(_SPEC, 1, 5, [3, 7, 11], [50, 60, 70], 2)
    np.testing.assert_array_equal(a.latency, again.latency)
    np.testing.assert_array_equal(a.reporting, again.reporting)
    other_round = schedule.plan_round(_SPEC, 1, 6, [3, 7, 11], [50, 60, 70], 2)
    self.assertFalse(np.array_equal(a.latency, other_round.latency))

  def test_larger_drop_prob_drops_a_superset(self):
    low = fault_settings.FaultSettings(drop_prob=0.1)
    high = fault_settings.FaultSettings(drop_prob=0.4)
    for r in range(1, 30):
      a, _ = _plan(low, r)
      b, _ = _plan(high, r)
      self.assertTrue((b.dropped >= a.dropped).all())

  def test_rates_and_latency_law(self):
    spec = fault_settings.FaultSettings(drop_prob=0.2, nan_prob=0.1, huge_prob=0.3,
                              latency_median=5.0, latency_sigma=0.5,
                              seconds_per_example=0.02)
    draws = [schedule.client_draws(spec, 0, r, c, 100)
             for r in range(1, 101) for c in range(100)]
    dropped = np.array([d[0] for d in draws])
    codes = np.array([d[1] for d in draws])
    latency = np.array([d[2] for d in draws])
    # 10,000 draws: 4-sigma binomial bounds.
    for observed, p in ((dropped.mean(), 0.2),
                        ((codes == schedule.NAN).mean(), 0.1),
                        ((codes == schedule.HUGE).mean(), 0.3)):
      self.assertLess(abs(observed - p), 4 * math.sqrt(p * (1 - p) / 1e4))
    # L = 5 exp(0.5 z) + 0.02 * 100: log(L - 2) ~ N(log 5, 0.5^2).
    logs = np.log(latency - 2.0)
    self.assertAlmostEqual(float(np.median(logs)), math.log(5.0), delta=0.03)
    self.assertAlmostEqual(float(np.std(logs)), 0.5, delta=0.02)


def _config(**overrides):
  return run_utils.default_config(
      validate=False, **{'data.num_clients': 20, 'clients_per_round': 10},
      **overrides)


class ConfigTest(parameterized.TestCase):

  @parameterized.parameters(
      ('faults.drop_prob', 1.5),
      ('faults.nan_prob', -0.1),
      ('faults.huge_prob', 2.0),
      ('faults.huge_norm', 0.0),
      ('faults.over_select', -0.5),
      ('faults.deadline', -1.0),
      ('faults.latency_median', 0.0),
      ('faults.latency_sigma', -1.0),
      ('faults.seconds_per_example', -0.1),
      ('faults.min_reports', 0),
      ('faults.min_reports', 11),
  )
  def test_bad_value_names_key(self, key, value):
    with self.assertRaisesRegex(config_lib.ConfigError, f"'{key}'"):
      config_lib.validate(_config(**{key: value}))

  def test_combinations(self):
    with self.assertRaisesRegex(config_lib.ConfigError,
                                "'faults.huge_prob'.*<= 1"):
      config_lib.validate(_config(**{'faults.nan_prob': 0.6,
                                     'faults.huge_prob': 0.5}))
    with self.assertRaisesRegex(config_lib.ConfigError,
                                "'faults.over_select'.*= 21 clients"):
      config_lib.validate(_config(**{'faults.over_select': 1.01}))
    with self.assertRaisesRegex(config_lib.ConfigError,
                                "'faults.over_select'.*dp.mode='user'"):
      config_lib.validate(_config(**{'faults.over_select': 0.2,
                                     'dp.mode': 'user'}))
    # Every fault composes with dropout; over_select 1.0 -> 20.
    config_lib.validate(_config(**{'faults.drop_prob': 0.3,
                                   'faults.nan_prob': 0.1,
                                   'faults.over_select': 1.0,
                                   'dropout.keep': 0.5}))

  def test_spec_from_config(self):
    cfg = config_lib.validate(_config(**{'faults.drop_prob': 0.25,
                                         'faults.min_reports': 3}))
    spec = run_utils.settings(cfg).faults
    self.assertEqual((spec.drop_prob, spec.min_reports), (0.25, 3))
    self.assertTrue(spec.active)
    self.assertFalse(spec.poisons)
    self.assertFalse(run_utils.settings(
        run_utils.default_config()).faults.active)


if __name__ == '__main__':
  absltest.main()
