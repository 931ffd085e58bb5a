"""One tiered round under a `faults.schedule.RoundPlan`, with per-tier bytes.

The accounting of `faults/rounds.py`, per tier: only reporting clients enter
the tiers' passes; every sampled client received its tier's slice, so a
tier's ``bytes_down = n_t × b_t`` with b_t, the bytes one client of tier t
receives, measured in the tier's pass (every client of a tier receives a
message of the same size; a remainder raises `FaultRoundError`). A tier
whose sampled clients all failed to report gets one probe pass on an empty
dataset, only to measure b_t (its outputs are discarded). A round with
fewer than `min_reports` reports, or none, keeps the previous state.

With `tiers.train_only` the other tiers' sampled clients take no part: they
receive nothing and are not counted.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from tff_compress.faults import rounds as fault_rounds
from tff_compress.faults import schedule
from tff_compress.tiers import process as tier_process


@dataclasses.dataclass(frozen=True)
class TierFigures:
  """One tier's part of a round.

  Attributes:
    sampled: Its clients taking part (sampled, not excluded by
      `train_only`).
    reported: Those whose update was aggregated.
    bytes_down: Bytes its sampled clients received.
    bytes_up: Bytes its reporting clients sent.
    taking_part: Per sampled client of the round, True if it is one of
      this tier's clients taking part.
  """

  sampled: int
  reported: int
  bytes_down: int
  bytes_up: int
  taking_part: np.ndarray


@dataclasses.dataclass(frozen=True)
class TieredOutcome:
  """`run_round`'s result: the round's totals and each tier's figures."""

  outcome: fault_rounds.RoundOutcome
  tiers: tuple[TierFigures, ...]

  @property
  def clients(self) -> int:
    """Clients taking part (all sampled ones unless `train_only`)."""
    return sum(t.sampled for t in self.tiers)


def _per_client(total: int, clients: int, tier: str) -> int:
  per_client, rest = divmod(int(total), clients)
  if rest:
    raise fault_rounds.FaultRoundError(
        f'tier {tier}: {int(total)} broadcast bytes over {clients} clients '
        'is not a whole number per client')
  return per_client


def run_round(training: tier_process.TieredTraining, state,
              plan: schedule.RoundPlan,
              datasets: Sequence) -> TieredOutcome:
  """Runs the tiers' passes on the reporting clients of `plan`.

  Args:
    training: The tiered training.
    state: The process state before the round.
    plan: Who reports and with which fault codes.
    datasets: One dataset (or worker-side descriptor) per sampled client,
      in `plan.sampled` order.
  """
  if len(datasets) != plan.num_sampled:
    raise ValueError(f'{len(datasets)} datasets for {plan.num_sampled} '
                     'sampled clients')
  process = training.process
  tiers = training.assignment[plan.sampled]
  taking_part = np.ones(plan.num_sampled, bool)
  if training.train_only is not None:
    taking_part = tiers == training.train_only
  reporting = np.flatnonzero(plan.reporting & taking_part)
  codes = [int(c) for c in plan.codes[reporting]]
  inputs = training.tier_inputs(
      [datasets[i] for i in reporting], tiers[reporting],
      codes if training.injects_faults else None)
  output = process.next(state, inputs) if reporting.size else None

  figures = []
  for t, name in enumerate(training.names):
    mine = taking_part & (tiers == t)
    reported = len(inputs[t])
    if reported:
      measured = output.metrics['tiers'][name]
      per_client = _per_client(measured['distributor']['bytes_down'],
                               reported, name)
      up = int(measured['aggregator']['bytes_up'])
    elif mine.any():
      # Nobody of this tier reported: measure what one client receives.
      first = int(np.flatnonzero(mine)[0])
      probe = training.tier_inputs([datasets[first].take(0)], [t],
                                   [schedule.OK] if training.injects_faults
                                   else None)[t]
      per_client = int(process.run_pass(state, t, probe).metrics[
          'distributor']['bytes_down'])
      up = 0
    else:
      per_client, up = 0, 0
    figures.append(TierFigures(int(mine.sum()), reported,
                               per_client * int(mine.sum()), up, mine))

  zeroed: Optional[int] = None
  if output is not None and 'zeroed' in output.metrics['aggregator']:
    zeroed = int(output.metrics['aggregator']['zeroed'])
  keep = output is None or plan.skipped
  return TieredOutcome(
      fault_rounds.RoundOutcome(
          state=state if keep else output.state,
          metrics=None if output is None else output.metrics,
          bytes_down=sum(f.bytes_down for f in figures),
          bytes_up=sum(f.bytes_up for f in figures),
          zeroed=zeroed),
      tuple(figures))
