"""A tiered run end to end: per-tier columns, summary, plot, bit-identical
resume."""

import io
import json
import os

from absl.testing import absltest
import numpy as np

from tests.tff_compress import run_utils
from tff_compress import simulate_lib
from tff_compress.program import run_dir as run_dir_lib

MIX = 'big:1:1.0, mid:1:0.5, low:1:0.25'
NAMES = ('big', 'mid', 'low')


def _config(**overrides):
  return run_utils.smoke_config(**{'tiers.mix': MIX, 'rounds': 4,
                                   **overrides})


class _Interrupt(Exception):
  pass


class TieredRunTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.ref_dir = os.path.join(absltest.get_default_test_tmpdir(), 'ref')
    cls.summary = simulate_lib.run(_config(), cls.ref_dir, out=io.StringIO())
    cls.rows = run_utils.metrics_rows(cls.ref_dir)

  def test_metrics_have_every_tier_column(self):
    expected = run_dir_lib.METRICS_COLUMNS + run_dir_lib.tier_columns(NAMES)
    self.assertEqual(tuple(self.rows[0]), expected)
    for row in self.rows:
      evaluated = row['eval_accuracy'] != ''
      for name in NAMES:
        col = lambda figure, name=name: run_dir_lib.tier_column(name, figure)
        self.assertEqual(row[col('eval_accuracy')] != '', evaluated)
      # The full-width tier deploys the global model.
      self.assertEqual(row[run_dir_lib.tier_column('big', 'eval_accuracy')],
                       row['eval_accuracy'])

  def test_bytes_and_flops_add_up_over_tiers(self):
    tiers = self.summary['tiers']
    for row in self.rows:
      clients = [int(row[f'tier_{n}_clients']) for n in NAMES]
      self.assertEqual(sum(clients), int(row['clients']))
      for name, n in zip(NAMES, clients):
        params = tiers[name]['params']
        self.assertEqual(int(row[f'tier_{name}_bytes_down']), n * 4 * params)
        self.assertEqual(int(row[f'tier_{name}_bytes_up']),
                         n * (4 * params + 4))
        self.assertEqual(row[f'tier_{name}_client_flops'] == '', n == 0)
      self.assertEqual(int(row['bytes_down']),
                       sum(int(row[f'tier_{n}_bytes_down']) for n in NAMES))
      flops = sum(float(row[f'tier_{n}_client_flops'] or 0) * c
                  for n, c in zip(NAMES, clients))
      self.assertAlmostEqual(float(row['client_flops']), flops / sum(clients),
                             delta=1e-6 * flops)

  def test_summary_reports_each_tier(self):
    with open(os.path.join(self.ref_dir, 'summary.json')) as f:
      summary = json.load(f)
    self.assertCountEqual(summary['tier_accuracy'], NAMES)
    for name in NAMES:
      self.assertEqual(summary['tier_accuracy'][name],
                       float(self.rows[-1][f'tier_{name}_eval_accuracy']))
      self.assertGreater(summary['tier_accuracy'][name], 0.2)  # chance 0.1
    tiers = summary['tiers']
    self.assertEqual([tiers[n]['clients'] for n in NAMES], [7, 7, 6])
    self.assertEqual([tiers[n]['widths']['dense1'] for n in NAMES],
                     [64, 32, 16])
    self.assertEqual(summary['model_params'], tiers['big']['params'])
    self.assertEqual(summary['client_model_params'], round(
        sum(tiers[n]['clients'] * tiers[n]['params'] for n in NAMES) / 20))
    self.assertTrue(os.path.exists(os.path.join(self.ref_dir, 'curves.png')))

  def test_interrupted_run_resumes_bit_identically(self):
    run_dir = self.create_tempdir().full_path

    def stop_after_two(round_num):
      if round_num == 2:
        raise _Interrupt()

    with self.assertRaises(_Interrupt):
      simulate_lib.run(_config(), run_dir, out=io.StringIO(),
                       after_round=stop_after_two)
    out = io.StringIO()
    simulate_lib.run(_config(), run_dir, out=out)
    self.assertIn('resuming after round 2', out.getvalue())
    for a, b in zip(run_utils.final_weights(run_dir),
                    run_utils.final_weights(self.ref_dir)):
      np.testing.assert_array_equal(a, b)
    strip = lambda rows: [{k: v for k, v in r.items() if k != 'round_seconds'}
                          for r in rows]
    self.assertEqual(strip(run_utils.metrics_rows(run_dir)),
                     strip(self.rows))


if __name__ == '__main__':
  absltest.main()
