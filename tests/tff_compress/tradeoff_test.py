"""The trade-off sweep: grid expansion, errors before any run, end to end."""

import csv
import os
import subprocess

# Keras 2.14 must be imported before absl parses flags (see tff_compress/cli.py).
import tensorflow  # pylint: disable=unused-import
from absl.testing import absltest
import ml_collections
import numpy as np

from tests.tff_compress import process_utils
from tff_compress import config_lib
from tff_compress import tradeoff_lib

_SMOKE_SWEEP = os.path.join(process_utils.WORKSPACE, 'configs',
                            'tradeoff_smoke.py')
_SMOKE = os.path.join(process_utils.WORKSPACE, 'configs', 'smoke.py')


def _sweep(**grids):
  s = tradeoff_lib.default_sweep_config()
  s.rounds = 2
  s.grids = ml_collections.ConfigDict(grids)
  return s


class ExpandTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.base = config_lib.load_config_file(_SMOKE)

  def test_product_union_baseline_seeds_dedup(self):
    s = _sweep(a={'uplink': {'bits': (8, 2), 'transform': ('hadamard',)}},
               b={'uplink': {'bits': (8,), 'transform': ('hadamard',)},
                  'broadcast': {'bits': (4,)}})
    s.seeds = (0, 1)
    cells = tradeoff_lib.expand(s, self.base)
    # baseline + a: 2 + b: 1, each for 2 seeds; nothing duplicated.
    self.assertLen(cells, 8)
    self.assertEqual(sum(c.grid == 'baseline' for c in cells), 2)
    self.assertEqual({c.seed for c in cells}, {0, 1})
    self.assertTrue(all(c.config.rounds == 2 for c in cells))
    self.assertTrue(all(c.config.eval_every == 2 for c in cells))
    self.assertLen({config_lib.config_hash(c.config) for c in cells}, 8)

  def test_bad_sweeps_fail_before_running(self):
    cases = [
        (_sweep(g={'uplink': {'bitz': (1,)}}), 'uplink.bitz'),
        (_sweep(g={'uplink': {'bits': ()}}), 'empty axis'),
        (_sweep(g={'uplink': {'bits': (0,)}}), 'uplink.bits'),
        (_sweep(g={'client': {'learning_rate': (-1.0,)}}),
         'client.learning_rate'),
        (_sweep(), 'no grid'),
    ]
    for sweep, expected in cases:
      with self.assertRaisesRegex(tradeoff_lib.SweepError, expected):
        tradeoff_lib.expand(sweep, self.base)

  def test_grid_from_dotted_keys(self):
    g = tradeoff_lib.grid({'uplink.bits': (1, 2), 'uplink.transform':
                           'hadamard', 'dropout.keep': [0.5]})
    self.assertEqual(g.uplink.bits, (1, 2))
    self.assertEqual(g.uplink.transform, ('hadamard',))
    self.assertEqual(g.dropout.keep, (0.5,))
    sweep = tradeoff_lib.default_sweep_config()
    sweep.grids.g = g
    cells = tradeoff_lib.expand(sweep, self.base)
    self.assertLen(cells, 3)  # baseline + 2
    self.assertEqual(
        {dict(c.overrides).get('uplink.bits') for c in cells}, {None, 1, 2})

  def test_pareto(self):
    pts = [(10, 0.5), (1, 0.4), (5, 0.45), (5, 0.3), (20, 0.5), (2, 0.6)]
    self.assertEqual(tradeoff_lib.pareto(pts), [1, 5])

  def test_frontier_lines_list_the_undominated_settings(self):
    def row(setting, acc, down, up, eps=None):
      return {'setting': setting, 'accuracy_mean': acc,
              'bytes_down_per_client_round': down,
              'bytes_up_per_client_round': up,
              'client_flops_per_round': 1e6, 'epsilon': eps}
    rows = [row('baseline', 0.90, 100, 100), row('a', 0.91, 50, 100),
            row('b', 0.80, 100, 10), row('c', 0.85, 100, 200, 3.0),
            row('d', 0.70, 100, 200, 1.0), row('e', 0.60, 100, 200, 2.0)]
    text = '\n'.join(tradeoff_lib.frontier_lines(rows))
    total = text.split('accuracy vs bytes down+up per client-round:')[1]
    total = total.split('Pareto')[0]
    self.assertEqual(
        [l for l in total.splitlines() if l.startswith('* ')],
        ['* 110 B: 0.8000 (-10.0 pt vs baseline) — b',
         '* 150 B: 0.9100 (+1.0 pt vs baseline) — a'])
    eps = text.split('accuracy vs ε:')[1]
    self.assertEqual([l for l in eps.splitlines() if l.startswith('* ')],
                     ['* 1.00: 0.7000 (-20.0 pt vs baseline) — d',
                      '* 3.00: 0.8500 (-5.0 pt vs baseline) — c'])

  def test_a_sweep_without_dp_draws_no_epsilon_plot(self):
    sweep_dir = self.create_tempdir().full_path
    stale = os.path.join(sweep_dir, 'accuracy_vs_epsilon.png')
    open(stale, 'wb').close()  # from an earlier grid of this sweep dir
    rows = [dict(grid=g, accuracy_mean=a, accuracy_std=0.0,
                 bytes_up_per_client_round=up, bytes_down_per_client_round=up,
                 client_flops_per_round=1e6, epsilon=None)
            for g, a, up in (('baseline', 0.9, 1000.0), ('up', 0.89, 40.0))]
    tradeoff_lib.plot(rows, sweep_dir)
    self.assertCountEqual(os.listdir(sweep_dir), [
        'accuracy_vs_uplink_bytes.png', 'accuracy_vs_downlink_bytes.png',
        'accuracy_vs_client_flops.png'])


class ResultTablesTest(absltest.TestCase):

  def _summary(self, acc, p13n=None):
    s = {'final_eval_accuracy': acc, 'mean_bytes_down_per_client': 100.0,
         'mean_bytes_up_per_client': 100.0, 'mean_client_flops': 1e6,
         'total_bytes_down': 1000, 'total_bytes_up': 1000,
         'compression_down_vs_float32': 1.0,
         'compression_up_vs_float32': 1.0, 'epsilon': None,
         'cell_wall_seconds': 1.0, 'mean_round_seconds': 0.1}
    if p13n is not None:
      s['personalization'] = {k: p13n + i / 100 for i, k in
                              enumerate(tradeoff_lib.P13N_KEYS)}
    return s

  def test_seed_means_table_and_plot(self):
    base = config_lib.load_config_file(_SMOKE)
    s = _sweep(fp={'algorithm': ('fedper',)})
    s.seeds = (0, 1)
    cells = tradeoff_lib.expand(s, base)
    self.assertEqual([c.grid for c in cells],
                     ['baseline', 'baseline', 'fp', 'fp'])
    rows = tradeoff_lib.aggregate(cells, [
        self._summary(0.8, 0.5), self._summary(0.8, 0.7),
        self._summary(0.9, 0.8), self._summary(0.9, 0.8)])
    by = {r['setting']: r for r in rows}
    self.assertAlmostEqual(by['baseline']['p13n_global_mean'], 0.6)
    self.assertAlmostEqual(by['baseline']['p13n_global_mean_std'],
                           np.std([0.5, 0.7], ddof=1))
    self.assertAlmostEqual(by['algorithm=fedper']['p13n_finetuned_mean'],
                           0.83)
    lines = tradeoff_lib.personalization_lines(rows)
    table = [l for l in lines if l.startswith('| ') and 'setting' not in l]
    # Best fine-tuned mean first.
    self.assertTrue(table[0].startswith('| algorithm=fedper | 0.8000 ± '))
    self.assertIn('| 86.0 % |', table[0])  # worse_share: 0.8 + 0.06
    sweep_dir = self.create_tempdir().full_path
    tradeoff_lib.plot_personalization(rows, sweep_dir)
    self.assertTrue(os.path.exists(
        os.path.join(sweep_dir, 'personalization.png')))

  def test_tier_lines_list_each_tiers_figures(self):
    row = {'setting': 'tiers.mix=big:1:1.0, low:1:0.25', 'seeds': 2}
    for name, acc, down, flops in (('big', 0.9, 6653480, 72.46e6),
                                   ('low', 0.8, 420776, 5.02e6)):
      row.update({f'tier_{name}_accuracy_mean': acc,
                  f'tier_{name}_accuracy_std': 0.01,
                  f'tier_{name}_bytes_down_per_client_round': down,
                  f'tier_{name}_bytes_up_per_client_round': down,
                  f'tier_{name}_client_flops_per_round': flops})
    lines = tradeoff_lib.tier_lines([{'setting': 'baseline', 'seeds': 2},
                                     row])
    table = [l for l in lines if l.startswith('| tiers.')]
    self.assertEqual(table, [
        '| tiers.mix=big:1:1.0, low:1:0.25 | big | 0.9000 ± 0.0100 | '
        '6,653,480 | 6,653,480 | 72.5 |',
        '| tiers.mix=big:1:1.0, low:1:0.25 | low | 0.8000 ± 0.0100 | '
        '420,776 | 420,776 | 5.0 |'])
    self.assertEqual(tradeoff_lib.tier_lines([{'setting': 'baseline'}]), [])

  def test_no_personalization_no_columns(self):
    base = config_lib.load_config_file(_SMOKE)
    cells = tradeoff_lib.expand(_sweep(e2={'client': {'epochs': (2,)}}),
                                base)
    rows = tradeoff_lib.aggregate(cells, [self._summary(0.8),
                                          self._summary(0.8, 0.5)])
    self.assertNotIn('p13n_global_mean', rows[0])
    self.assertIn('p13n_global_mean', rows[1])
    self.assertEqual(tradeoff_lib.personalization_lines(rows[:1]), [])


class SweepEndToEndTest(absltest.TestCase):

  def _run(self, *args):
    child = process_utils.popen_python(
        ['-m', 'tff_compress.tradeoff', f'--config={_SMOKE_SWEEP}', *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = child.communicate(timeout=900)
    return child.returncode, out.decode(), err.decode()

  def test_smoke_sweep_writes_results_and_resumes(self):
    sweep_dir = self.create_tempdir().full_path
    code, out, err = self._run(f'--sweep_dir={sweep_dir}')
    self.assertEqual(code, 0, err[-2000:])
    self.assertIn('[7/7]', out)
    self.assertIn('  cell 7/7 | round    2/2', out)  # per-cell progress
    with open(os.path.join(sweep_dir, 'results.csv'), newline='') as f:
      rows = list(csv.DictReader(f))
    self.assertLen(rows, 7)
    by_grid = {r['grid']: r for r in rows}
    # dense 784 -> 64 -> 10 at keep 0.5: about half the client FLOPs.
    self.assertBetween(
        float(by_grid['dropout']['client_flops_ratio_vs_baseline']),
        0.45, 0.55)
    self.assertGreater(float(by_grid['dp']['epsilon']), 0)
    self.assertEqual(float(by_grid['dp']['delta']), 1e-5)
    self.assertEqual(by_grid['baseline']['epsilon'], '')
    base = next(r for r in rows if r['grid'] == 'baseline')
    self.assertAlmostEqual(float(base['up_ratio_vs_baseline']), 1.0)
    one_bit = [r for r in rows if r.get('uplink.bits') == '1']
    self.assertLen(one_bit, 2)
    for r in one_bit:  # 1-bit Hadamard uplink: > 20x fewer bytes
      self.assertGreater(float(r['up_ratio_vs_float32']), 20)
    with open(os.path.join(sweep_dir, 'results.md')) as f:
      self.assertIn('Pareto frontier, accuracy vs ε:', f.read())
    for name in ('results.md', 'accuracy_vs_uplink_bytes.png',
                 'accuracy_vs_downlink_bytes.png',
                 'accuracy_vs_epsilon.png', 'accuracy_vs_client_flops.png'):
      self.assertTrue(os.path.exists(os.path.join(sweep_dir, name)), name)
    self.assertLen(os.listdir(os.path.join(sweep_dir, 'cells')), 7)

    # Re-running (here with a process pool) skips every finished cell and
    # reproduces the table.
    code, out, err = self._run(f'--sweep_dir={sweep_dir}',
                               '--config.parallel=2')
    self.assertEqual(code, 0, err[-2000:])
    with open(os.path.join(sweep_dir, 'results.csv'), newline='') as f:
      again = list(csv.DictReader(f))
    strip = lambda rs: [{k: v for k, v in r.items()
                         if 'seconds' not in k} for r in rs]
    self.assertEqual(strip(again), strip(rows))

  def test_bad_axis_is_one_line_error(self):
    code, out, err = self._run('--config.grids.codec.uplink.bits=(0,)',
                               '--sweep_dir=/nonexistent/never')
    self.assertEqual(code, 2, err)
    lines = err.strip().splitlines()
    self.assertLen(lines, 1)
    self.assertIn('uplink.bits', lines[0])
    self.assertNotIn('[1/', out)

  def test_unknown_sweep_variant_is_one_line_error(self):
    code, _, err = self._run(
        '--config=' + os.path.join(process_utils.WORKSPACE, 'configs',
                                   'tradeoff.py') + ':bogus')
    self.assertEqual(code, 2, err)
    lines = err.strip().splitlines()
    self.assertLen(lines, 1)
    self.assertIn("configs/tradeoff.py takes one of '', 'eden', not 'bogus'",
                  lines[0])
    self.assertNotIn('Traceback', lines[0])


if __name__ == '__main__':
  absltest.main()
