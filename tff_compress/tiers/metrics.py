"""What a tiered run reports: per-tier `metrics.csv` columns and summary.

Per round and tier (`program/run_dir.tier_columns`): the tier's clients
taking part, the bytes they received and sent (measured in the tier's pass,
`tiers/rounds.py`), and their mean training FLOPs (local examples × the
tier model's FLOPs per example, `models/flops.py`); at each evaluation, the
loss and accuracy of the tier's deployed model on the test split
(`fedavg/algorithm.py`). `summary.json` gets `tier_accuracy` (tier name ->
final accuracy of its deployed model) and `tiers` (per tier: share,
population, widths, parameters, FLOPs per example, mean bytes per client
and round, final evaluation).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from tff_compress.learning import task as task_lib
from tff_compress.program import run_dir
from tff_compress.tiers import process as tier_process
from tff_compress.tiers import rounds as tier_rounds
from tff_compress.tiers import settings as tier_settings


def round_columns(training: tier_process.TieredTraining,
                  tiered: tier_rounds.TieredOutcome,
                  examples: Sequence[int]) -> dict:
  """The round's per-tier columns, and `clients` / `client_flops` over the
  clients taking part.

  Args:
    training: The tiered training.
    tiered: The round's outcome.
    examples: E · n_i per sampled client, in sampling order.
  """
  row, every = {}, []
  for tier, figures in zip(training.tiers, tiered.tiers):
    per_example = tier.task.train_flops_per_example
    flops = [examples[i] * per_example
             for i in np.flatnonzero(figures.taking_part)]
    every.extend(flops)
    row[run_dir.tier_column(tier.name, 'clients')] = figures.sampled
    row[run_dir.tier_column(tier.name, 'bytes_down')] = figures.bytes_down
    row[run_dir.tier_column(tier.name, 'bytes_up')] = figures.bytes_up
    row[run_dir.tier_column(tier.name, 'client_flops')] = (
        float(np.mean(flops)) if flops else None)
  row['clients'] = tiered.clients
  row['client_flops'] = float(np.mean(every)) if every else None
  return row


def _last(rows: Sequence[dict], key: str) -> Optional[float]:
  values = [float(r[key]) for r in rows if r.get(key) not in (None, '')]
  return values[-1] if values else None


def _total(rows: Sequence[dict], key: str) -> int:
  return sum(int(r[key]) for r in rows if r.get(key) not in (None, ''))


def population(training: tier_process.TieredTraining) -> list[int]:
  """Clients of each tier in the whole population."""
  return [int((training.assignment == t).sum())
          for t in range(len(training.tiers))]


def mean_client_params(training: tier_process.TieredTraining) -> int:
  """Parameters of the model a client trains, averaged over all clients."""
  counts = population(training)
  return int(round(sum(c * t.task.num_params
                       for c, t in zip(counts, training.tiers)) /
                   sum(counts)))


def summarize(training: tier_process.TieredTraining,
              rows: Sequence[dict]) -> dict:
  """`summary.json`'s `tier_accuracy` and `tiers` from `metrics.csv` rows."""
  tiers, accuracy = {}, {}
  for tier, count in zip(training.tiers, population(training)):
    col = lambda figure, name=tier.name: run_dir.tier_column(name, figure)
    client_rounds = _total(rows, col('clients'))
    flops = sum(float(r[col('client_flops')]) * int(r[col('clients')])
                for r in rows if r.get(col('client_flops')) not in (None, ''))
    accuracy[tier.name] = _last(rows, col('eval_accuracy'))
    tiers[tier.name] = {
        'share': tier.tier.share,
        'clients': count,
        'widths': tier.plan.widths,
        'params': tier.task.num_params,
        'train_flops_per_example': tier.task.train_flops_per_example,
        'client_rounds': client_rounds,
        'mean_bytes_down_per_client': (
            _total(rows, col('bytes_down')) / client_rounds
            if client_rounds else None),
        'mean_bytes_up_per_client': (
            _total(rows, col('bytes_up')) / client_rounds
            if client_rounds else None),
        'mean_client_flops': flops / client_rounds if client_rounds else None,
        'final_eval_accuracy': accuracy[tier.name],
        'final_eval_loss': _last(rows, col('eval_loss')),
    }
  return {'tier_accuracy': accuracy, 'tiers': tiers}


def describe(training: tier_process.TieredTraining, task: task_lib.Task,
             tiers: tier_settings.TierSettings) -> list[str]:
  """The run's start-up lines about its tiers."""
  lines = [f'device tiers: {tiers.slicing} slicing, activations '
           f'{"rescaled" if tiers.rescale else "not rescaled"}']
  for tier, count in zip(training.tiers, population(training)):
    sub = tier.task
    only = (' (the only tier that trains)'
            if training.train_only == tier.index else '')
    lines.append(
        f'tier {tier.tier.describe()}: {count} clients{only} train '
        + ', '.join(f'{k} {v}' for k, v in tier.plan.widths.items())
        + f' | {sub.num_params:,} params, '
        f'{task.train_flops_per_example / sub.train_flops_per_example:.2f}x '
        'fewer FLOPs/example')
  return lines
