"""One training round under a `schedule.RoundPlan`: who is fed to TFF, bytes.

Only the clients that report enter `process.next` — a TFF computation cannot
drop a client halfway, and every client in it would be counted as having
uploaded. The others are accounted for here:

* every sampled client received the broadcast: ``bytes_down = n × b``,
  where b, the bytes one client receives, is measured in the call (all
  clients of a round receive equally many bytes: the same model, or
  same-shape submodels, through a fixed-size codec; a remainder in the
  division would mean otherwise and raises `FaultRoundError`);
* dropped and late clients upload nothing: ``bytes_up`` is what the
  reporting clients sent, as the aggregator measured it (poisoned updates
  included: they were sent, then zeroed).

A round with fewer than `min_reports` reports still runs the reporters'
call (their uploads happened and are counted) but keeps the previous state:
model, optimizer, aggregator and codec states are all unchanged. A round
nobody reported in runs one client on an empty dataset, only to measure b.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

from tff_compress.faults import schedule


class FaultRoundError(RuntimeError):
  """The round's measurements contradict the accounting above."""


@dataclasses.dataclass(frozen=True)
class RoundOutcome:
  """Result of `run_round`.

  Attributes:
    state: The state after the round (the input state if it was skipped or
      nobody reported).
    metrics: `process.next` metrics of the reporting clients (None if nobody
      reported).
    bytes_down: Bytes received by all sampled clients.
    bytes_up: Bytes sent by the reporting clients.
    zeroed: Updates the aggregator zeroed (None if it has no zeroing stage
      or nobody reported).
  """

  state: Any
  metrics: Optional[Any]
  bytes_down: int
  bytes_up: int
  zeroed: Optional[int]

  def train_metric(self, name: str) -> Optional[float]:
    """A client-work training metric of the reporters, or None."""
    if self.metrics is None:
      return None
    return float(self.metrics['client_work']['train'][name])


def run_round(training, state, plan: schedule.RoundPlan,
              datasets: Sequence) -> RoundOutcome:
  """Runs `training.process` on the reporting clients of `plan`.

  Args:
    training: A `fedavg.process.Training`.
    state: The learning process state before the round.
    plan: Who reports and with which fault codes.
    datasets: One dataset per sampled client, in `plan.sampled` order.
  """
  if len(datasets) != plan.num_sampled:
    raise ValueError(f'{len(datasets)} datasets for {plan.num_sampled} '
                     'sampled clients')
  process = training.process
  if not plan.num_reported:
    probe = process.next(state, training.client_inputs(
        [datasets[0].take(0)], [schedule.OK]))
    per_client = int(probe.metrics['distributor']['bytes_down'])
    return RoundOutcome(state, None, per_client * plan.num_sampled, 0, None)
  chosen = [d for d, r in zip(datasets, plan.reporting) if r]
  codes = [int(c) for c in plan.reporter_codes]
  output = process.next(state, training.client_inputs(
      chosen, codes if training.injects_faults else None))
  m = output.metrics
  per_client, rest = divmod(int(m['distributor']['bytes_down']),
                            plan.num_reported)
  if rest:
    raise FaultRoundError(
        f'{int(m["distributor"]["bytes_down"])} broadcast bytes over '
        f'{plan.num_reported} clients is not a whole number per client')
  aggregator = m['aggregator']
  return RoundOutcome(
      state=state if plan.skipped else output.state,
      metrics=m,
      bytes_down=per_client * plan.num_sampled,
      bytes_up=int(aggregator['bytes_up']),
      zeroed=int(aggregator['zeroed']) if 'zeroed' in aggregator else None)


def columns(plan: schedule.RoundPlan) -> dict:
  """The `metrics.csv` fault columns of one round (`run_dir.METRICS_COLUMNS`).

  `clients` (sampled) and `zeroed` are filled by the driver.
  """
  return {
      'clients_reported': plan.num_reported,
      'clients_dropped': plan.num_dropped,
      'clients_late': plan.num_late,
      'round_latency': plan.round_latency,
      'skipped': int(plan.skipped),
  }


def summarize(rows: Sequence[dict]) -> dict:
  """Totals over `metrics.csv` rows, for `summary.json` (key `faults`)."""
  def total(key):
    return sum(int(r[key]) for r in rows if r.get(key) not in (None, ''))
  latencies = [float(r['round_latency']) for r in rows
               if r.get('round_latency') not in (None, '')]
  reported, zeroed = total('clients_reported'), total('zeroed')
  return {
      'clients_sampled': total('clients'),
      'clients_reported': reported,
      'clients_dropped': total('clients_dropped'),
      'clients_late': total('clients_late'),
      'clients_zeroed': zeroed,
      # Updates that moved the model: reported, not zeroed, round applied.
      'effective_updates': sum(
          int(r['clients_reported']) - int(r['zeroed'] or 0)
          for r in rows if not int(r['skipped'])),
      'skipped_rounds': total('skipped'),
      'simulated_seconds': sum(latencies) if latencies else None,
  }
