"""A faulty run end to end: it completes, stays finite, and says what happened.

20 % of sampled clients drop and 10 % of reports are NaN; over-selection 1.5x
with a deadline; an interruption and resume in the middle. The metrics are
checked against the fault draws recomputed here from the documented seeding
(faults/schedule.py), not through the library's planner.
"""

import io
import math
import os
import shutil

# Keras 2.14 must be imported before absl parses flags (see tff_compress/cli.py).
import tensorflow  # pylint: disable=unused-import
from absl.testing import absltest
import numpy as np

from tests.tff_compress import run_utils
from tff_compress import simulate_lib
from tff_compress.data import registry as data_registry
from tff_compress.program import run_dir as run_dir_lib
from tff_compress.program import sampling
_ROUNDS = 6
_STOP_AFTER = 5


class _Stop(Exception):
  pass


def _config():
  # Dense model, 4 of 20 clients; seed 1's rounds include a skip and a round
  # with no report.
  return run_utils.smoke_config(**{
      'seed': 1, 'rounds': _ROUNDS, 'eval_every': 1, 'faults.drop_prob': 0.2,
      'faults.nan_prob': 0.1, 'faults.over_select': 0.5,
      'faults.deadline': 14.0, 'faults.seconds_per_example': 0.01,
      'faults.min_reports': 3})


def _expected(cfg, client_sizes):
  """Per round: the counts the faults section implies, from raw draws."""
  f, k = cfg.faults, cfg.clients_per_round
  n = math.ceil(k * (1 + f.over_select))
  out = []
  for r in range(1, cfg.rounds + 1):
    picked = sampling.sample_clients(len(client_sizes), n, cfg.seed, r)
    dropped, nan, arrivals = 0, {}, []
    for c in picked:
      rng = np.random.default_rng([cfg.seed, r, 2, int(c)])
      u_drop, u_poison, z = rng.random(), rng.random(), rng.standard_normal()
      latency = (f.latency_median * math.exp(f.latency_sigma * z) +
                 f.seconds_per_example * cfg.client.epochs * client_sizes[c])
      if u_drop < f.drop_prob:
        dropped += 1
        continue
      nan[int(c)] = u_poison < f.nan_prob
      if latency <= f.deadline:
        arrivals.append((latency, int(c)))
    reporters = sorted(arrivals)[:k]
    reported = len(reporters)
    if reported == k:
      latency = reporters[-1][0]
    else:
      latency = f.deadline
    out.append(dict(
        clients=n, clients_reported=reported, clients_dropped=dropped,
        clients_late=n - dropped - reported,
        zeroed=sum(nan[c] for _, c in reporters) if reported else None,
        skipped=int(reported < f.min_reports), round_latency=latency))
  return out


class SimulateFaultsTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.cfg = _config()
    cls.run_dir = os.path.join(absltest.get_default_test_tmpdir(), 'faulty')
    shutil.rmtree(cls.run_dir, ignore_errors=True)  # a previous direct run

    def stop(round_num):
      if round_num == _STOP_AFTER:
        raise _Stop()

    with absltest.TestCase().assertRaises(_Stop):
      simulate_lib.run(cls.cfg, cls.run_dir, out=io.StringIO(),
                       after_round=stop)
    log = io.StringIO()
    cls.summary = simulate_lib.run(cls.cfg, cls.run_dir, out=log)
    cls.log = log.getvalue()
    cls.rows = run_dir_lib.MetricsCsv(
        os.path.join(cls.run_dir, 'metrics.csv')).read()
    data = data_registry.build_federated_data(cls.cfg.data, seed=cls.cfg.seed)
    cls.expected = _expected(
        cls.cfg, [data.client_size(c) for c in data.client_ids])

  def test_resumed_and_completed(self):
    self.assertIn(f'resuming after round {_STOP_AFTER}', self.log)
    self.assertEqual([int(r['round']) for r in self.rows],
                     list(range(1, _ROUNDS + 1)))

  def test_counts_match_the_seeded_draws(self):
    for row, want in zip(self.rows, self.expected):
      for key in ('clients', 'clients_reported', 'clients_dropped',
                  'clients_late', 'skipped'):
        self.assertEqual(int(row[key]), want[key], (row['round'], key))
      if want['zeroed'] is None:
        self.assertEqual(row['zeroed'], '')
      else:
        self.assertEqual(int(row['zeroed']), want['zeroed'], row['round'])
      self.assertAlmostEqual(float(row['round_latency']),
                             want['round_latency'], places=9)
    # The draws exercise every path: drops, late, NaN zeroed in an applied
    # round, a skipped round with reports, a round nobody reported in.
    self.assertGreater(sum(w['clients_dropped'] for w in self.expected), 0)
    self.assertGreater(sum(w['clients_late'] for w in self.expected), 0)
    self.assertTrue(any(w['zeroed'] and not w['skipped']
                        for w in self.expected))
    self.assertTrue(any(w['skipped'] and w['clients_reported']
                        for w in self.expected))
    self.assertTrue(any(not w['clients_reported'] for w in self.expected))

  def test_model_stays_finite(self):
    for row in self.rows:
      self.assertTrue(np.isfinite(float(row['eval_loss'])), row['round'])
    with np.load(os.path.join(self.run_dir, 'final_weights.npz')) as z:
      for name in z.files:
        self.assertTrue(np.isfinite(z[name]).all(), name)

  def test_skipped_rounds_leave_the_model_unchanged(self):
    for prev, row in zip(self.rows, self.rows[1:]):
      same = row['eval_loss'] == prev['eval_loss']
      self.assertEqual(same, bool(int(row['skipped'])), row['round'])
    self.assertIn('SKIPPED (model unchanged)', self.log)

  def test_bytes_follow_the_convention(self):
    """Everyone sampled got the model; only reporters uploaded."""
    params = self.summary['model_params']
    for row in self.rows:
      self.assertEqual(int(row['bytes_down']), int(row['clients']) * 4 * params)
      self.assertEqual(int(row['bytes_up']),
                       int(row['clients_reported']) * (4 * params + 4))
      if not int(row['clients_reported']):
        self.assertEqual(row['train_loss'], '')

  def test_summary_totals(self):
    s = self.summary['faults']
    e = self.expected
    self.assertEqual(s['clients_sampled'], sum(w['clients'] for w in e))
    self.assertEqual(s['clients_dropped'], sum(w['clients_dropped'] for w in e))
    self.assertEqual(s['skipped_rounds'], sum(w['skipped'] for w in e))
    self.assertEqual(s['effective_updates'], sum(
        w['clients_reported'] - (w['zeroed'] or 0)
        for w in e if not w['skipped']))
    self.assertAlmostEqual(s['simulated_seconds'],
                           sum(w['round_latency'] for w in e))


if __name__ == '__main__':
  absltest.main()
