"""Trade-off sweeps: a grid of configs -> runs -> table, CSV and frontier plots.

A sweep config (see `configs/tradeoff.py`) names a base simulation config and
one or more named grids. Each grid is a nested dict of axis values mirroring
the simulation config (`grids.down.broadcast.bits = (32, 8, 2)`); a grid's
cells are the Cartesian product of its axes, the sweep's cells are the union
of all grids (deduplicated) times the seeds, plus the base config itself as
the baseline. Every cell is a normal run directory under
`<sweep dir>/cells/`, so a finished cell is skipped, an interrupted one
resumes, and any cell can be inspected or exported.

Library code: no flags. `tradeoff.py` is the binary.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import io
import itertools
import json
import math
import multiprocessing
import os
import sys
import time
from typing import Optional, Sequence, TextIO

import ml_collections

from tff_compress import config_lib


class SweepError(ValueError):
  """The sweep config is invalid (message names the key)."""


@dataclasses.dataclass(frozen=True)
class Cell:
  """One simulation of the sweep."""

  grid: str
  overrides: tuple  # ((key, value), ...) in axis order, without the seed
  seed: int
  config: ml_collections.ConfigDict

  @property
  def label(self) -> str:
    parts = [f'{k}={v}' for k, v in self.overrides] or ['baseline']
    return ', '.join(parts) + f' (seed {self.seed})'


def check_variant(config_file: str, variant: str,
                  variants: Sequence[str]) -> None:
  """Refuses a `--config=<config_file>:<variant>` the sweep file lacks.

  Raises:
    SweepError: naming the file and the variants it takes ('' = the sweep
      itself).
  """
  if variant not in ('', *variants):
    allowed = ', '.join(repr(v) for v in ('', *variants))
    raise SweepError(f'{config_file} takes one of {allowed}, not '
                     f'{variant!r}')


def default_sweep_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = 'tradeoff'
  c.base = 'configs/caldas_mnist.py'
  c.rounds = 0  # 0 keeps the base config's rounds
  c.seeds = (0,)
  c.parallel = 1
  c.grids = ml_collections.ConfigDict()
  return c


def grid(axes: dict) -> ml_collections.ConfigDict:
  """A grid from dotted config keys: `grid({'uplink.bits': (1, 2)})`.

  A scalar value is an axis of one value. The grid's cells are the product
  of its axes.
  """
  g = ml_collections.ConfigDict()
  for key, values in axes.items():
    node = g
    *parents, leaf = key.split('.')
    for part in parents:
      if part not in node:
        node[part] = ml_collections.ConfigDict()
      node = node[part]
    node[leaf] = tuple(values) if isinstance(values, (tuple, list)) else (
        values,)
  return g


def _axes_of(grid: ml_collections.ConfigDict) -> list[tuple[str, tuple]]:
  axes = []
  for key, values in config_lib.flatten(grid).items():
    if not isinstance(values, (tuple, list)):
      values = (values,)
    axes.append((key, tuple(values)))
  return axes


def _set(config: ml_collections.ConfigDict, key: str, value) -> None:
  node = config
  *path, leaf = key.split('.')
  for part in path:
    node = node[part]
  current = node[leaf]
  if isinstance(current, float) and isinstance(value, int):
    value = float(value)
  node[leaf] = value


def expand(sweep: ml_collections.ConfigDict,
           base: ml_collections.ConfigDict) -> list[Cell]:
  """All cells, each config validated; raises SweepError before any run."""
  known = config_lib.flatten(config_lib.default_config())
  if not sweep.seeds:
    raise SweepError('sweep key \'seeds\' is empty')
  if not isinstance(sweep.parallel, int) or sweep.parallel < 1:
    raise SweepError(f'sweep key \'parallel\' is {sweep.parallel!r}; '
                     'allowed: 1..')
  if sweep.rounds < 0:
    raise SweepError(f'sweep key \'rounds\' is {sweep.rounds}; allowed: 0..')
  if not sweep.grids:
    raise SweepError('sweep key \'grids\' declares no grid')
  grids = [('baseline', ())]
  for name, grid in sweep.grids.items():
    axes = _axes_of(grid)
    if not axes:
      raise SweepError(f'grid {name!r} has no axes')
    for key, values in axes:
      if key not in known:
        raise SweepError(f'grids.{name}.{key}: {key!r} is not a config key')
      if not values:
        raise SweepError(f'grids.{name}.{key} is an empty axis')
      if key == 'seed':
        raise SweepError(f'grids.{name}.seed: use the sweep key \'seeds\'')
      if key.split('.')[0] in config_lib.EXECUTION_SECTIONS:
        raise SweepError(f'grids.{name}.{key}: where cells run is not a '
                         'sweep axis (use --workers)')
    for combo in itertools.product(*[v for _, v in axes]):
      grids.append((name, tuple(zip([k for k, _ in axes], combo))))

  cells, seen = [], set()
  for (name, overrides), seed in itertools.product(grids, sweep.seeds):
    cfg = ml_collections.ConfigDict(base.to_dict())
    for key, value in overrides:
      try:
        _set(cfg, key, value)
      except (TypeError, ValueError, KeyError) as e:
        raise SweepError(f'grids.{name}.{key}={value!r}: {e}') from e
    cfg.seed = seed
    if sweep.rounds:
      cfg.rounds = sweep.rounds
    # A sweep compares final accuracy only: evaluate once, after the last
    # round (evaluation does not change training).
    cfg.eval_every = cfg.rounds
    try:
      config_lib.validate(cfg)
    except config_lib.ConfigError as e:
      where = f'grid {name!r} cell {dict(overrides)}' if overrides else 'base'
      raise SweepError(f'{where}: {e}') from e
    identity = config_lib.config_hash(cfg)
    if identity in seen:
      continue
    seen.add(identity)
    cells.append(Cell(name, overrides, seed, cfg))
  return cells


def cell_dir(sweep_dir: str, cell: Cell) -> str:
  return os.path.join(sweep_dir, 'cells',
                      f'{cell.config.name}-{config_lib.config_hash(cell.config)}')


def _finished_summary(config: ml_collections.ConfigDict,
                      run_dir: str) -> Optional[dict]:
  """The summary of a finished run of exactly `config` in `run_dir`, if any."""
  try:
    with open(os.path.join(run_dir, 'config.json')) as f:
      same = json.load(f) == json.loads(config_lib.to_json(config))
    with open(os.path.join(run_dir, 'summary.json')) as f:
      summary = json.load(f)
  except (OSError, ValueError):
    return None
  if not same or summary.get('rounds') != config.rounds:
    return None
  try:
    with open(os.path.join(run_dir, 'cell.json')) as f:
      summary['cell_wall_seconds'] = json.load(f)['cell_wall_seconds']
  except (OSError, ValueError, KeyError):
    summary['cell_wall_seconds'] = summary['total_round_seconds']
  return summary


class _PrefixedLines(io.TextIOBase):
  """A text stream that prefixes every line (per-cell progress)."""

  def __init__(self, out: TextIO, prefix: str):
    super().__init__()
    self._out, self._prefix, self._pending = out, prefix, ''

  def write(self, text: str) -> int:
    self._pending += text
    *lines, self._pending = self._pending.split('\n')
    for line in lines:
      self._out.write(f'{self._prefix}{line}\n')
    return len(text)

  def flush(self) -> None:
    self._out.flush()


def _run_cell(config_dict: dict, run_dir: str, prefix: str = '') -> dict:
  """Runs one cell (in this or a spawned process); returns its summary.

  A cell whose run directory already holds a finished run of the same config
  is not started again (no TFF worker, no data loading). The cell's own
  progress lines (one per round, with its ETA) go to stdout behind `prefix`.
  """
  config = ml_collections.ConfigDict(config_dict)
  finished = _finished_summary(config, run_dir)
  if finished is not None:
    return finished
  # pylint: disable=g-import-not-at-top
  from absl import logging
  import tensorflow as tf
  from tff_compress import simulate_lib
  # pylint: enable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  tf.get_logger().setLevel('ERROR')
  t0 = time.monotonic()
  summary = simulate_lib.run(config, run_dir,
                             out=_PrefixedLines(sys.stdout, prefix))
  summary['cell_wall_seconds'] = time.monotonic() - t0
  with open(os.path.join(run_dir, 'cell.json'), 'w') as f:
    json.dump({'cell_wall_seconds': summary['cell_wall_seconds']}, f)
  return summary


def run_sweep(sweep: ml_collections.ConfigDict,
              base: ml_collections.ConfigDict, sweep_dir: str,
              out: TextIO = sys.stdout) -> list[dict]:
  """Runs every cell (resuming finished ones) and writes the results."""
  cells = expand(sweep, base)
  os.makedirs(sweep_dir, exist_ok=True)
  with open(os.path.join(sweep_dir, 'sweep.json'), 'w') as f:
    json.dump(sweep.to_dict(), f, indent=2, sort_keys=True, default=str)
  print(f'sweep {sweep.name}: {len(cells)} cells, {sweep.parallel} at a time'
        f' -> {sweep_dir}', file=out, flush=True)
  summaries: list[Optional[dict]] = [None] * len(cells)
  t_start = time.monotonic()
  done = 0

  def report(i):
    nonlocal done
    done += 1
    elapsed = time.monotonic() - t_start
    eta = elapsed / done * (len(cells) - done)
    s = summaries[i]
    print(f'[{done}/{len(cells)}] {cells[i].label}: accuracy '
          f'{s["final_eval_accuracy"]:.4f}, '
          f'{s["mean_bytes_down_per_client"]:,.0f} B down / '
          f'{s["mean_bytes_up_per_client"]:,.0f} B up per client-round | '
          f'cell {s["cell_wall_seconds"]:.0f} s | ETA {eta / 60:.1f} min',
          file=out, flush=True)

  if sweep.parallel == 1:
    for i, cell in enumerate(cells):
      summaries[i] = _run_cell(cell.config.to_dict(),
                               cell_dir(sweep_dir, cell),
                               _cell_prefix(i, len(cells)))
      report(i)
  else:
    ctx = multiprocessing.get_context('spawn')
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=sweep.parallel, mp_context=ctx) as pool:
      futures = {pool.submit(_run_cell, cell.config.to_dict(),
                             cell_dir(sweep_dir, cell),
                             _cell_prefix(i, len(cells))): i
                 for i, cell in enumerate(cells)}
      for future in concurrent.futures.as_completed(futures):
        i = futures[future]
        summaries[i] = future.result()
        report(i)

  rows = aggregate(cells, summaries)
  write_results(rows, sweep_dir)
  print(f'results: {os.path.join(sweep_dir, "results.md")}', file=out,
        flush=True)
  return rows


def _cell_prefix(i: int, n: int) -> str:
  return f'  cell {i + 1}/{n} | '


def aggregate(cells: Sequence[Cell], summaries: Sequence[dict]) -> list[dict]:
  """One row per (grid, overrides): mean ± std over seeds, ratios vs base."""
  groups: dict = {}
  configs: dict = {}
  for cell, s in zip(cells, summaries):
    groups.setdefault((cell.grid, cell.overrides), []).append(s)
    configs[(cell.grid, cell.overrides)] = cell.config
  base = groups[('baseline', ())]
  base_down = _mean([s['mean_bytes_down_per_client'] for s in base])
  base_up = _mean([s['mean_bytes_up_per_client'] for s in base])
  base_flops = _mean([s['mean_client_flops'] for s in base])
  rows = []
  for (grid, overrides), runs in groups.items():
    acc = [s['final_eval_accuracy'] for s in runs]
    eps = [s['epsilon'] for s in runs if s.get('epsilon') is not None]
    down = _mean([s['mean_bytes_down_per_client'] for s in runs])
    up = _mean([s['mean_bytes_up_per_client'] for s in runs])
    rows.append({
        'grid': grid,
        'setting': ', '.join(f'{k}={v}' for k, v in overrides) or 'baseline',
        **{k: v for k, v in overrides},
        'seeds': len(runs),
        'accuracy_mean': _mean(acc),
        'accuracy_std': _std(acc),
        'bytes_down_per_client_round': down,
        'bytes_up_per_client_round': up,
        'client_flops_per_round': _mean(
            [s['mean_client_flops'] for s in runs]),
        'bytes_down_total': _mean([s['total_bytes_down'] for s in runs]),
        'bytes_up_total': _mean([s['total_bytes_up'] for s in runs]),
        'down_ratio_vs_float32': _mean(
            [s['compression_down_vs_float32'] for s in runs]),
        'up_ratio_vs_float32': _mean(
            [s['compression_up_vs_float32'] for s in runs]),
        'down_ratio_vs_baseline': base_down / down,
        'up_ratio_vs_baseline': base_up / up,
        'client_flops_ratio_vs_baseline': _mean(
            [s['mean_client_flops'] for s in runs]) / base_flops,
        'epsilon': _mean(eps) if eps else None,
        'delta': float(configs[(grid, overrides)].dp.delta) if eps else None,
        'wall_seconds': _mean([s['cell_wall_seconds'] for s in runs]),
        'mean_round_seconds': _mean([s['mean_round_seconds'] for s in runs]),
        **_tier_figures(runs),
        **_personalization_figures(runs),
    })
  return rows


# Per device tier (`tiers.*` cells), from summary.json's `tiers`.
_TIER_FIGURES = (('accuracy', 'final_eval_accuracy'),
                 ('bytes_down_per_client_round', 'mean_bytes_down_per_client'),
                 ('bytes_up_per_client_round', 'mean_bytes_up_per_client'),
                 ('client_flops_per_round', 'mean_client_flops'))


def _tier_figures(runs: Sequence[dict]) -> dict:
  """`tier_<name>_<figure>` means over seeds (accuracy: mean and std)."""
  out = {}
  for name in (runs[0].get('tiers') or {}):
    for figure, key in _TIER_FIGURES:
      values = [s['tiers'][name][key] for s in runs
                if s['tiers'][name][key] is not None]
      if figure == 'accuracy':
        out[f'tier_{name}_accuracy_mean'] = _mean(values) if values else None
        out[f'tier_{name}_accuracy_std'] = _std(values)
      else:
        out[f'tier_{name}_{figure}'] = _mean(values) if values else None
  return out


def tier_lines(rows: Sequence[dict]) -> list[str]:
  """Markdown: each tier's deployed-model accuracy, bytes and FLOPs per
  client-round, for the rows of `tiers.*` cells (none: no lines)."""
  tiered = [r for r in rows if any(k.startswith('tier_') for k in r)]
  if not tiered:
    return []
  out = ['', 'Device tiers: accuracy of each tier\'s deployed model, and '
         'what one of its clients receives, sends and computes per round:',
         '', '| setting | tier | accuracy | down B/client-round | '
         'up B/client-round | MFLOPs/client-round |', '|---|---|---|---|---|---|']
  for row in tiered:
    names = [k[len('tier_'):-len('_accuracy_mean')] for k in row
             if k.startswith('tier_') and k.endswith('_accuracy_mean')]
    for name in names:
      def fig(figure, row=row, name=name):
        return row.get(f'tier_{name}_{figure}')
      acc = fig('accuracy_mean')
      acc_text = '—' if acc is None else f'{acc:.4f}'
      if acc is not None and row['seeds'] > 1:
        acc_text += f' ± {fig("accuracy_std"):.4f}'
      cells = [f'{v:,.0f}' if v is not None else '—' for v in (
          fig('bytes_down_per_client_round'), fig('bytes_up_per_client_round'))]
      flops = fig('client_flops_per_round')
      cells.append('—' if flops is None else f'{flops / 1e6:,.1f}')
      out.append(f'| {row["setting"]} | {name} | {acc_text} | '
                 + ' | '.join(cells) + ' |')
  return out


# `summary.json` personalization figures averaged over seeds (per-client
# accuracy on the clients' own held-out parts; README "Personalization").
P13N_KEYS = ('global_mean', 'global_p10', 'global_p90', 'finetuned_mean',
             'finetuned_p10', 'finetuned_p90', 'worse_share')


def _personalization_figures(runs: Sequence[dict]) -> dict:
  """`p13n_<key>` (mean over seeds) and `p13n_<key>_std` of `P13N_KEYS`,
  if every seed evaluated personalization."""
  blocks = [s.get('personalization') for s in runs]
  if not all(blocks):
    return {}
  out = {}
  for key in P13N_KEYS:
    values = [b[key] for b in blocks]
    out[f'p13n_{key}'] = _mean(values)
    out[f'p13n_{key}_std'] = _std(values)
  return out


def _mean(xs):
  xs = [float(x) for x in xs]
  return sum(xs) / len(xs) if xs else float('nan')


def _std(xs):
  if len(xs) < 2:
    return 0.0
  m = _mean(xs)
  return math.sqrt(sum((float(x) - m) ** 2 for x in xs) / (len(xs) - 1))


def pareto(points: Sequence[tuple[float, float]]) -> list[int]:
  """Indices of points not dominated (lower cost and higher accuracy)."""
  order = sorted(range(len(points)), key=lambda i: (points[i][0],
                                                    -points[i][1]))
  front, best = [], -math.inf
  for i in order:
    if points[i][1] > best:
      front.append(i)
      best = points[i][1]
  return front


def write_results(rows: Sequence[dict], sweep_dir: str) -> None:
  """results.csv, results.md and the frontier plots."""
  keys = []
  for row in rows:
    for k in row:
      if k not in keys:
        keys.append(k)
  with open(os.path.join(sweep_dir, 'results.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=keys)
    writer.writeheader()
    for row in rows:
      writer.writerow({k: ('' if row.get(k) is None else row.get(k))
                       for k in keys})
  base = next(r for r in rows if r['grid'] == 'baseline')
  base_bytes = (base['bytes_down_per_client_round'] +
                base['bytes_up_per_client_round'])
  budgets = (1 / 64, 1 / 16, 1 / 4, 1.0, math.inf)

  def budget(row):
    fraction = (row['bytes_down_per_client_round'] +
                row['bytes_up_per_client_round']) / base_bytes
    return next(b for b in budgets if fraction <= b * 1.0001)

  lines = [
      '| budget (down+up vs baseline) | setting | accuracy | down B/client-round '
      '| up B/client-round | down × | up × | client FLOPs × | ε | s/round |',
      '|---|---|---|---|---|---|---|---|---|---|',
  ]
  for row in sorted(rows, key=lambda r: (budget(r), -r['accuracy_mean'])):
    b = budget(row)
    label = f'≤ 1/{round(1 / b)}' if b < 1 else ('≤ 1' if b == 1 else '> 1')
    acc = f'{row["accuracy_mean"]:.4f}'
    if row['seeds'] > 1:
      acc += f' ± {row["accuracy_std"]:.4f}'
    eps = ('—' if row['epsilon'] is None else
           f'{row["epsilon"]:.2f} (δ={row["delta"]:g})')
    lines.append(
        f'| {label} | {row["setting"]} | {acc} | '
        f'{row["bytes_down_per_client_round"]:,.0f} | '
        f'{row["bytes_up_per_client_round"]:,.0f} | '
        f'{row["down_ratio_vs_baseline"]:.1f} | '
        f'{row["up_ratio_vs_baseline"]:.1f} | '
        f'{1 / row["client_flops_ratio_vs_baseline"]:.2f} | {eps} | '
        f'{row["mean_round_seconds"]:.2f} |')
  lines.extend(tier_lines(rows))
  lines.extend(frontier_lines(rows))
  lines.extend(personalization_lines(rows))
  with open(os.path.join(sweep_dir, 'results.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  plot(rows, sweep_dir)
  plot_personalization(rows, sweep_dir)


def personalization_lines(rows: Sequence[dict]) -> list[str]:
  """Markdown table of the settings that evaluated personalization, best
  fine-tuned mean first (empty if none did)."""
  evaluated = [r for r in rows if 'p13n_global_mean' in r]
  if not evaluated:
    return []

  def pm(row, key):
    value = f'{row[f"p13n_{key}"]:.4f}'
    if row['seeds'] > 1:
      value += f' ± {row[f"p13n_{key}_std"]:.4f}'
    return value

  out = ['', 'Personalization: per-client accuracy on each evaluation '
         "client's held-out part, received model vs fine-tuned (mean over "
         'clients, 10th-90th percentile; mean ± std over seeds):', '',
         '| setting | received mean | received p10-p90 | fine-tuned mean | '
         'fine-tuned p10-p90 | worse after fine-tuning | eval accuracy |',
         '|---|---|---|---|---|---|---|']
  for row in sorted(evaluated, key=lambda r: -r['p13n_finetuned_mean']):
    acc = f'{row["accuracy_mean"]:.4f}'
    if row['seeds'] > 1:
      acc += f' ± {row["accuracy_std"]:.4f}'
    out.append(
        f'| {row["setting"]} | {pm(row, "global_mean")} | '
        f'{row["p13n_global_p10"]:.3f}-{row["p13n_global_p90"]:.3f} | '
        f'{pm(row, "finetuned_mean")} | '
        f'{row["p13n_finetuned_p10"]:.3f}-{row["p13n_finetuned_p90"]:.3f} | '
        f'{100 * row["p13n_worse_share"]:.1f} % | {acc} |')
  return out


def plot_personalization(rows: Sequence[dict], sweep_dir: str) -> None:
  """personalization.png: per setting, the received and the fine-tuned
  model's mean per-client accuracy (averaged over seeds), the bars spanning
  the 10th to 90th percentile of clients."""
  evaluated = [r for r in rows if 'p13n_global_mean' in r]
  path = os.path.join(sweep_dir, 'personalization.png')
  if not evaluated:
    if os.path.exists(path):
      os.remove(path)
    return
  # pylint: disable=g-import-not-at-top
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  # pylint: enable=g-import-not-at-top
  evaluated = sorted(evaluated, key=lambda r: r['p13n_finetuned_mean'])
  fig, ax = plt.subplots(figsize=(9, 0.5 * len(evaluated) + 1.5))
  for k, (offset, name, label) in enumerate((
      (-0.15, 'global', 'received model'), (0.15, 'finetuned', 'fine-tuned'))):
    ys = [i + offset for i in range(len(evaluated))]
    color = f'C{k}'
    # The mean can lie outside [p10, p90] (a few clients at 0): a range
    # line and a marker, not an error bar around the mean.
    ax.hlines(ys, [r[f'p13n_{name}_p10'] for r in evaluated],
              [r[f'p13n_{name}_p90'] for r in evaluated], color=color,
              label=f'{label}: p10-p90 of clients')
    ax.plot([r[f'p13n_{name}_mean'] for r in evaluated], ys, 'o',
            color=color, label=f'{label}: mean')
  ax.set_yticks(range(len(evaluated)))
  ax.set_yticklabels([r['setting'] for r in evaluated], fontsize=8)
  ax.set_xlabel("per-client accuracy on the client's held-out part")
  ax.grid(alpha=0.3)
  ax.legend(loc='lower left', fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


# (row key or callable, what it costs, how to print it) of each frontier.
_FRONTIERS = (
    (lambda r: r['bytes_down_per_client_round'] +
     r['bytes_up_per_client_round'], 'bytes down+up per client-round',
     lambda v: f'{v:,.0f} B'),
    ('bytes_up_per_client_round', 'uplink bytes per client-round',
     lambda v: f'{v:,.0f} B'),
    ('bytes_down_per_client_round', 'downlink bytes per client-round',
     lambda v: f'{v:,.0f} B'),
    ('client_flops_per_round', 'client training FLOPs per round',
     lambda v: f'{v / 1e6:,.1f} MFLOPs'),
    ('epsilon', 'ε', lambda v: f'{v:.2f}'),
)


def frontier_lines(rows: Sequence[dict]) -> list[str]:
  """Markdown: for each cost, the settings no other setting beats on both
  that cost and accuracy (the Pareto frontier), cheapest first.

  The ε frontier covers the DP settings only (a non-private run has no ε).
  """
  base = next((r['accuracy_mean'] for r in rows
               if r.get('setting') == 'baseline'), None)
  out = []
  for key, what, fmt in _FRONTIERS:
    cost = key if callable(key) else (lambda r, k=key: r.get(k))
    pts = [(cost(r), r['accuracy_mean'], r) for r in rows
           if cost(r) is not None]
    if not pts:
      continue
    front = pareto([(c, a) for c, a, _ in pts])
    out += ['', f'Pareto frontier, accuracy vs {what}:', '']
    for i in front:
      c, a, r = pts[i]
      delta = ('' if base is None or r['setting'] == 'baseline' else
               f' ({100 * (a - base):+.1f} pt vs baseline)')
      out.append(f'* {fmt(c)}: {a:.4f}{delta} — {r["setting"]}')
  return out


def plot(rows: Sequence[dict], sweep_dir: str) -> None:
  # pylint: disable=g-import-not-at-top
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  # pylint: enable=g-import-not-at-top
  specs = (('bytes_up_per_client_round', 'uplink bytes per client-round',
            'accuracy_vs_uplink_bytes.png', True),
           ('bytes_down_per_client_round', 'downlink bytes per client-round',
            'accuracy_vs_downlink_bytes.png', True),
           ('client_flops_per_round', 'training FLOPs per client-round',
            'accuracy_vs_client_flops.png', True),
           ('epsilon', 'ε (at the config δ)', 'accuracy_vs_epsilon.png',
            True))
  base = next((r for r in rows if r['grid'] == 'baseline'), None)
  for key, label, filename, log in specs:
    pts = [(r[key], r['accuracy_mean'], r) for r in rows
           if r.get(key) is not None]
    path = os.path.join(sweep_dir, filename)
    if not pts:  # e.g. ε in a sweep without DP cells: no plot of nothing
      if os.path.exists(path):
        os.remove(path)  # a stale plot from an earlier grid of this sweep
      continue
    fig, ax = plt.subplots(figsize=(7, 5))
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    errs = [p[2]['accuracy_std'] for p in pts]
    ax.errorbar(xs, ys, yerr=errs, fmt='o', alpha=0.6, label='cells')
    front = pareto(list(zip(xs, ys)))
    fx = [xs[i] for i in front]
    fy = [ys[i] for i in front]
    ax.step(fx, fy, where='post', color='C3', label='Pareto frontier')
    ax.plot(fx, fy, 'o', color='C3')
    for p in pts:
      if p[2]['grid'] == 'baseline':
        ax.plot(p[0], p[1], '*', markersize=16, color='k',
                label='baseline')
    if key == 'epsilon' and base is not None:
      ax.axhline(base['accuracy_mean'], color='k', linestyle='--',
                 label='non-private baseline')
    if log:
      ax.set_xscale('log')
    ax.legend(loc='lower right')
    ax.set_xlabel(label)
    ax.set_ylabel('final eval accuracy')
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
