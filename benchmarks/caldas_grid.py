"""Benchmark: Caldas et al. 2018's codec grid on the embedded task.

For each direction (broadcast, uplink) on its own: transform {none, hadamard,
kashin} x bits {1, 2, 4, 8} x subsample {1, 0.5}, plus the uncompressed
baseline, at a fixed round budget. Every cell is a normal run directory
(resumable; a finished cell is not re-run), and the table is written as
Markdown.

  ./bazelw run //benchmarks:caldas_grid -- --rounds=30 --out=docs/results/caldas_grid.md
"""

from __future__ import annotations

import io
import itertools
import os
import time

from absl import app
from absl import flags

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# Before absl parses flags (see tff_compress/cli.py).
import tensorflow as tf  # pylint: disable=unused-import,wrong-import-position

_CONFIG = flags.DEFINE_string('config', 'configs/caldas_mnist.py',
                              'Base config (relative to the workspace).')
_ROUNDS = flags.DEFINE_integer('rounds', 30, 'Round budget of every cell.')
_OUT = flags.DEFINE_string('out', 'docs/results/caldas_grid.md',
                           'Markdown table (relative to the workspace).')
_RUNS = flags.DEFINE_string('runs', 'runs/caldas_grid',
                            'Folder of the cells\' run directories.')
_DIRECTIONS = flags.DEFINE_list('directions', ['broadcast', 'uplink'],
                                'Directions to sweep.')
_TRANSFORMS = flags.DEFINE_list('transforms', ['none', 'hadamard', 'kashin'],
                                'Transforms.')
_BITS = flags.DEFINE_list('bits', ['1', '2', '4', '8'], 'Quantization bits.')
_SUBSAMPLE = flags.DEFINE_list('subsample', ['1', '0.5'], 'Kept fractions.')


def _workspace_path(path: str) -> str:
  if os.path.isabs(path):
    return path
  return os.path.join(os.environ.get('BUILD_WORKSPACE_DIRECTORY', '.'), path)


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top
  import json
  from absl import logging
  from tff_compress import config_lib
  from tff_compress import simulate_lib
  # pylint: enable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  tf.get_logger().setLevel('ERROR')

  def config_for(direction, transform, bits, subsample):
    cfg = config_lib.load_config_file(_workspace_path(_CONFIG.value))
    cfg.rounds = _ROUNDS.value
    cfg.eval_every = _ROUNDS.value
    if direction:
      cfg[direction].transform = transform
      cfg[direction].bits = bits
      cfg[direction].subsample = subsample
    return config_lib.validate(cfg)

  cells = [(None, 'none', 32, 1.0)]
  for direction in _DIRECTIONS.value:
    for transform, bits, sub in itertools.product(
        _TRANSFORMS.value, _BITS.value, _SUBSAMPLE.value):
      cells.append((direction, transform, int(bits), float(sub)))

  results = []
  t_start = time.monotonic()
  for i, cell in enumerate(cells):
    cfg = config_for(*cell)
    run_dir = os.path.join(
        _workspace_path(_RUNS.value),
        f'{cfg.name}-{config_lib.config_hash(cfg)}')
    t0 = time.monotonic()
    summary = simulate_lib.run(cfg, run_dir, out=io.StringIO())
    elapsed = time.monotonic() - t_start
    eta = elapsed / (i + 1) * (len(cells) - i - 1)
    results.append((cell, summary))
    print(f'[{i + 1}/{len(cells)}] {cell}: acc '
          f'{summary["final_eval_accuracy"]:.4f} '
          f'({time.monotonic() - t0:.0f} s, ETA {eta / 60:.1f} min)',
          flush=True)

  base = results[0][1]
  lines = [
      f'Base config `{_CONFIG.value}`, {_ROUNDS.value} rounds, final eval '
      'accuracy on the 1,000 held-out digits; bytes are per client per round '
      'as measured by the run (`summary.json`).',
      '',
      '| direction | transform | bits | subsample | accuracy | Δ vs float32 (pt) '
      '| bytes down/client | bytes up/client | down ratio | up ratio '
      '| s/round | round time vs baseline |',
      '|---|---|---|---|---|---|---|---|---|---|---|---|',
  ]
  for (direction, transform, bits, sub), s in results:
    delta = 100 * (s['final_eval_accuracy'] - base['final_eval_accuracy'])
    lines.append(
        f'| {direction or "baseline"} | {transform} | {bits} | {sub:g} | '
        f'{s["final_eval_accuracy"]:.4f} | {delta:+.1f} | '
        f'{s["mean_bytes_down_per_client"]:,.0f} | '
        f'{s["mean_bytes_up_per_client"]:,.0f} | '
        f'{s["compression_down_vs_float32"]:.1f}× | '
        f'{s["compression_up_vs_float32"]:.1f}× | '
        f'{s["mean_round_seconds"]:.2f} | '
        f'{s["mean_round_seconds"] / base["mean_round_seconds"]:.2f}× |')
  out_path = _workspace_path(_OUT.value)
  os.makedirs(os.path.dirname(out_path), exist_ok=True)
  with open(out_path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  with open(os.path.splitext(out_path)[0] + '.json', 'w') as f:
    json.dump([{'cell': c, 'summary': s} for c, s in results], f, indent=1)
  print('\n'.join(lines))


if __name__ == '__main__':
  app.run(main)
