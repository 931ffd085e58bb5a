"""The `faults.*` config section (README "Client faults")."""

from __future__ import annotations

import dataclasses
import math

from tff_compress import settings_lib as s


@dataclasses.dataclass(frozen=True)
class FaultSettings(s.Section):
  """Simulated client faults (units: probabilities, seconds).

  Per round and sampled client, seeded by (seed, round, client): it never
  reports with probability `drop_prob`; a reporting client sends a NaN
  update with probability `nan_prob` or one of L2 norm `huge_norm` with
  probability `huge_prob`. The server samples ⌈K·(1 + over_select)⌉ clients
  and aggregates the first K reports by simulated latency
  (`latency_median · exp(latency_sigma · z) + seconds_per_example ×` local
  examples) arriving within `deadline` (0 = none); a round with fewer than
  `min_reports` reports is skipped (model unchanged). With any of these set,
  updates that are non-finite or have L2 norm > dp.zeroing_norm are zeroed.
  """

  SECTION = 'faults'

  drop_prob: float = s.field(0.0, s.float_range(0.0, 1.0),
                             'a sampled client never reports')
  nan_prob: float = s.field(0.0, s.float_range(0.0, 1.0),
                            'a report is NaN (a diverged client)')
  huge_prob: float = s.field(0.0, s.float_range(0.0, 1.0),
                             'a report is rescaled to L2 norm huge_norm')
  huge_norm: float = s.field(1e6, s.float_range(0.0, lo_open=True),
                             'L2 norm of a huge report')
  over_select: float = s.field(
      0.0, s.float_range(0.0),
      'sample ceil(K (1 + x)) clients, keep the first K reports')
  deadline: float = s.field(
      0.0, s.float_range(0.0),
      'simulated seconds until the round closes (0 = none)')
  latency_median: float = s.field(10.0, s.float_range(0.0, lo_open=True),
                                  'median device/network seconds')
  latency_sigma: float = s.field(0.5, s.float_range(0.0),
                                 'log-normal sigma of the latency')
  seconds_per_example: float = s.field(
      0.0, s.float_range(0.0), 'compute seconds per local example')
  min_reports: int = s.field(1, s.int_range(1),
                             'fewer reports skip the round')

  @property
  def active(self) -> bool:
    """True if any knob makes a round differ from 'every client reports'."""
    return bool(self.drop_prob or self.nan_prob or self.huge_prob or
                self.over_select or self.deadline)

  @property
  def poisons(self) -> bool:
    """True if some reporting clients send NaN or huge updates."""
    return bool(self.nan_prob or self.huge_prob)

  def num_sampled(self, clients_per_round: int) -> int:
    """n = ⌈K·(1+x)⌉ (rounded first so 10·1.3 gives 13, not 14)."""
    return int(math.ceil(round(clients_per_round * (1.0 + self.over_select),
                               9)))

  @classmethod
  def check(cls, config) -> None:
    f = config.faults
    if f.min_reports > config.clients_per_round:
      raise s.problem('faults.min_reports', (
          f'is {f.min_reports}; allowed: 1..clients_per_round '
          f'({config.clients_per_round})'))
    if f.nan_prob + f.huge_prob > 1:
      raise s.problem('faults.huge_prob', (
          f'is {f.huge_prob}; faults.nan_prob + faults.huge_prob must be <= 1 '
          f'(nan_prob is {f.nan_prob})'))
    sampled = cls.from_config(f).num_sampled(config.clients_per_round)
    if config.data.name != 'emnist' and sampled > config.data.num_clients:
      raise s.problem('faults.over_select', (
          f'is {f.over_select}; it samples ceil(clients_per_round * (1 + '
          f'over_select)) = {sampled} clients, allowed: at most '
          f'data.num_clients ({config.data.num_clients})'))
    if config.dp.mode == 'user' and f.over_select:
      raise s.problem('faults.over_select', (
          f"is {f.over_select}; allowed: 0 with dp.mode='user' (its epsilon "
          'assumes clients_per_round sampled clients per round)'))
