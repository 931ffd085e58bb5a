"""Benchmark: accuracy under client faults vs fault-free at equal useful work.

For each seed: (1) the fault config (default `configs/faults.py`: 20 %
dropouts, 10 % NaN reports, 1.4x over-selection, 30 s deadline); its
`summary.json` counts U, the client updates that moved the model (reported,
not zeroed, in applied rounds). (2) The same task without faults and
clients_per_round = round(U / rounds): the same number of effective client
updates. (3) For reference, the fault-free run with the nominal K.
Every run evaluates after every round; accuracy = the eval accuracy after
the last round, and its mean over the last `--last` rounds (on this non-IID
split with server momentum, single evaluations swing by several points from
round to round).

  ./bazelw run //benchmarks:faults_accuracy -- --rounds=30 --seeds=0,1,2

Runs are ordinary run directories under --out_dir (resumable; a re-run
reuses finished ones).
"""

from __future__ import annotations

import io
import os

from absl import app
from absl import flags

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# Before absl parses flags (see tff_compress/cli.py).
import tensorflow as tf  # pylint: disable=unused-import,wrong-import-position

_CONFIG = flags.DEFINE_string(
    'config', 'configs/faults.py', 'Fault config (relative to workspace).')
_ROUNDS = flags.DEFINE_integer('rounds', 30, 'Rounds per run.')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Config seeds.')
_LAST = flags.DEFINE_integer(
    'last', 10, 'Accuracy is also averaged over this many last rounds.')
_OUT_DIR = flags.DEFINE_string(
    'out_dir', 'runs/bench-faults', 'Where the run directories go.')


def _accuracies(rows, last: int) -> tuple[float, float]:
  evals = [float(r['eval_accuracy']) for r in rows if r['eval_accuracy']]
  return evals[-1], sum(evals[-last:]) / len(evals[-last:])


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top
  from absl import logging
  from benchmarks import workspace
  from tff_compress import config_lib
  from tff_compress import simulate_lib
  from tff_compress.program import run_dir as run_dir_lib
  # pylint: enable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)

  out_dir = run_dir_lib.resolve_user_path(_OUT_DIR.value)
  defaults = config_lib.default_config().faults

  def run(cfg, label):
    config_lib.validate(cfg)
    run_dir = os.path.join(out_dir, f'{label}-{config_lib.config_hash(cfg)}')
    log = io.StringIO()
    summary = simulate_lib.run(cfg, run_dir, out=log)
    rows = run_dir_lib.MetricsCsv(os.path.join(run_dir, 'metrics.csv')).read()
    print(f'  {label}: {run_dir}', flush=True)
    return summary, rows

  table = []
  for seed in (int(s) for s in _SEEDS.value):
    faulty = workspace.load_config(_CONFIG.value)
    faulty.seed, faulty.rounds, faulty.eval_every = seed, _ROUNDS.value, 1
    k = faulty.clients_per_round
    summary, rows = run(faulty, f'faults-s{seed}')
    useful = summary['faults']['effective_updates']
    table.append((seed, 'faults', k, summary, rows, useful))
    k_eq = max(1, round(useful / faulty.rounds))
    for label, clients in (('fault-free, equal updates', k_eq),
                           ('fault-free, nominal K', k)):
      clean = workspace.load_config(_CONFIG.value)
      clean.seed, clean.rounds, clean.eval_every = seed, _ROUNDS.value, 1
      clean.faults = defaults
      clean.clients_per_round = clients
      s, r = run(clean, f'clean-k{clients}-s{seed}')
      table.append((seed, label, clients, s, r, clients * clean.rounds))

  last = _LAST.value
  print('\n| seed | run | K | effective client updates | final eval acc |'
        f' mean eval acc, last {last} rounds | sim. seconds |'
        ' wall s of rounds |')
  print('|---|---|---|---|---|---|---|---|')
  for seed, label, k, summary, rows, useful in table:
    final, mean_last = _accuracies(rows, last)
    sim = (summary.get('faults') or {}).get('simulated_seconds')
    print(f'| {seed} | {label} | {k} | {useful} | {final:.4f} |'
          f' {mean_last:.4f} |'
          f' {f"{sim:.0f}" if sim else "-"} |'
          f' {summary["total_round_seconds"]:.0f} |')
  print()
  gaps = []
  for seed in (int(s) for s in _SEEDS.value):
    runs = {label: _accuracies(rows, last)
            for s, label, _, _, rows, _ in table if s == seed}
    f, c = runs['faults'], runs['fault-free, equal updates']
    gaps.append((f[0] - c[0], f[1] - c[1]))
    print(f'seed {seed}: faults - fault-free at equal updates = '
          f'{100 * gaps[-1][0]:+.2f} pt final, '
          f'{100 * gaps[-1][1]:+.2f} pt mean of last {last}')
  print(f'mean over seeds: {100 * sum(g[0] for g in gaps) / len(gaps):+.2f} pt'
        f' final, {100 * sum(g[1] for g in gaps) / len(gaps):+.2f} pt mean of'
        f' last {last}')


if __name__ == '__main__':
  app.run(main)
