"""Seeded client faults of one round: who drops, who is late, who is poisoned.

The model (config section `faults`, see the README) per round t with K =
`clients_per_round` and over-selection x:

1. The server samples n = ⌈K·(1+x)⌉ clients (`num_sampled`); each receives
   the broadcast.
2. Every sampled client i draws, from a generator seeded by (config seed, t,
   i) only — not by which other clients were sampled, nor by any other fault
   knob — in this fixed order:

   * u_drop ~ U[0, 1): the client never reports if u_drop < `drop_prob`;
   * u_poison ~ U[0, 1): if it reports, its update is non-finite (NaN) if
     u_poison < `nan_prob`, else of L2 norm `huge_norm` if u_poison <
     `nan_prob + huge_prob`, else the honest update;
   * z ~ N(0, 1): its simulated latency in seconds (broadcast received ->
     update received), ``L_i = latency_median · exp(latency_sigma · z)
     + seconds_per_example · E · n_i`` — a log-normal device/network time
     plus compute time proportional to its local work (E epochs over n_i
     examples).

3. Clients that did not drop and whose L_i ≤ `deadline` (0 = no deadline)
   are on time; the first K of them by latency (ties by sampling order)
   report — the server closes the round at the K-th report and discards the
   rest, who are counted as *late* (after the deadline, or surplus of the
   over-selection).
4. The simulated round latency is the K-th report's latency when K clients
   reported; otherwise the deadline (the server waited for it), or, without
   a deadline, the last report's latency (the simulation knows the dropped
   clients will never answer; a real server would need a timeout).
5. A round with fewer than `min_reports` reports is skipped: the model and
   every server state stay as they were.

Fixed draw order and per-client seeds make every run, and every resumed run,
draw the same faults; the same u's under a larger `drop_prob` drop a
superset of clients, so configs differ only where their knobs differ.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np

from tff_compress.faults import settings as fault_settings

# Fault codes sent to the fault-injecting client work (`client_work.py`).
OK = 0
NAN = 1
HUGE = 2

_FAULT_STREAM = 2  # sample_clients uses 0, shuffle seeds 1 (simulate_lib)


@dataclasses.dataclass(frozen=True)
class RoundPlan:
  """Faults of one round; arrays are per sampled client, in sampling order.

  Attributes:
    sampled: Client indices the server sampled (n of them).
    dropped: True for clients that never report.
    codes: `OK`, `NAN` or `HUGE`: what the client's update would be.
    latency: Simulated seconds to report (NaN when faults are inactive).
    reporting: True for the (at most K) clients whose updates the server
      receives and aggregates (poisoned ones included).
    late: True for clients that did not drop and do not report.
    round_latency: Simulated seconds until the round closed (None when
      faults are inactive).
    skipped: True if fewer than `min_reports` clients reported.
  """

  sampled: np.ndarray
  dropped: np.ndarray
  codes: np.ndarray
  latency: np.ndarray
  reporting: np.ndarray
  late: np.ndarray
  round_latency: Optional[float]
  skipped: bool

  @property
  def num_sampled(self) -> int:
    return len(self.sampled)

  @property
  def num_reported(self) -> int:
    return int(self.reporting.sum())

  @property
  def num_dropped(self) -> int:
    return int(self.dropped.sum())

  @property
  def num_late(self) -> int:
    return int(self.late.sum())

  @property
  def num_poisoned(self) -> int:
    """Reporting clients whose update is NaN or huge."""
    return int((self.reporting & (self.codes != OK)).sum())

  @property
  def reporter_codes(self) -> np.ndarray:
    return self.codes[self.reporting]


def client_draws(spec: fault_settings.FaultSettings, seed: int,
                 round_num: int, client_index: int, local_examples: int
                 ) -> tuple[bool, int, float]:
  """(dropped, fault code, latency seconds) of one client in one round.

  Args:
    spec: Fault knobs.
    seed: Config seed.
    round_num: 1-based round.
    client_index: The client's index in the dataset (not its slot).
    local_examples: E · n_i, examples it processes this round.
  """
  rng = np.random.default_rng([seed, round_num, _FAULT_STREAM, client_index])
  u_drop, u_poison = rng.random(), rng.random()
  z = rng.standard_normal()
  dropped = u_drop < spec.drop_prob
  if u_poison < spec.nan_prob:
    code = NAN
  elif u_poison < spec.nan_prob + spec.huge_prob:
    code = HUGE
  else:
    code = OK
  latency = (spec.latency_median * math.exp(spec.latency_sigma * z) +
             spec.seconds_per_example * local_examples)
  return bool(dropped), code, float(latency)


def plan_round(spec: fault_settings.FaultSettings, seed: int, round_num: int,
               sampled: Sequence[int], local_examples: Sequence[int],
               clients_per_round: int) -> RoundPlan:
  """Which of the `sampled` clients report in `round_num` (module docstring).

  Args:
    spec: Fault knobs.
    seed: Config seed.
    round_num: 1-based round.
    sampled: The n sampled client indices, in sampling order.
    local_examples: E · n_i per sampled client.
    clients_per_round: K, the reports the server waits for.
  """
  sampled = np.asarray(sampled)
  n = len(sampled)
  if not spec.active:
    none = np.zeros(n, bool)
    return RoundPlan(sampled, none, np.zeros(n, np.int32),
                     np.full(n, np.nan), np.ones(n, bool), none, None, False)
  draws = [client_draws(spec, seed, round_num, int(c), int(e))
           for c, e in zip(sampled, local_examples)]
  dropped = np.array([d[0] for d in draws], bool)
  codes = np.array([d[1] for d in draws], np.int32)
  latency = np.array([d[2] for d in draws], np.float64)
  on_time = ~dropped
  if spec.deadline > 0:
    on_time &= latency <= spec.deadline
  order = [i for i in np.argsort(latency, kind='stable') if on_time[i]]
  first = order[:clients_per_round]
  reporting = np.zeros(n, bool)
  reporting[first] = True
  if len(first) == clients_per_round:
    round_latency = float(latency[first[-1]])
  elif spec.deadline > 0:
    round_latency = float(spec.deadline)
  else:
    round_latency = float(latency[first[-1]]) if first else 0.0
  return RoundPlan(
      sampled=sampled, dropped=dropped, codes=codes, latency=latency,
      reporting=reporting, late=~dropped & ~reporting,
      round_latency=round_latency,
      skipped=len(first) < spec.min_reports)
