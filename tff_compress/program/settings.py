"""The run's top-level config keys: what the program loop needs."""

from __future__ import annotations

import dataclasses

from tff_compress import settings_lib as s

# Values of `algorithm`; `simulate_lib.ALGORITHMS` maps each to its
# program-loop adapter (a test keeps the two in step).
ALGORITHMS = ('fedavg', 'fedavg_bn', 'fedgkt')


@dataclasses.dataclass(frozen=True)
class RunSettings(s.Section):
  """Top-level keys: identity, schedule, sampling and evaluation of a run."""

  SECTION = ''

  name: str = s.field('default', s.string, 'names the run directory')
  seed: int = s.field(
      0, s.int_range(0, 2**31 - 1),
      'every random choice derives from it and the round number')
  rounds: int = s.field(20, s.int_range(1), 'federated rounds')
  clients_per_round: int = s.field(
      10, s.int_range(1),
      'K, clients sampled per round (without replacement, from (seed, round))')
  eval_every: int = s.field(
      5, s.int_range(1),
      'federated evaluation on the test split every K rounds and after the '
      'last')
  eval_clients: int = s.field(
      10, s.int_range(1), 'the test split is cut into this many clients')
  algorithm: str = s.field(
      'fedavg', s.choice(ALGORITHMS),
      "'fedavg' (a TFF learning process: FedAvg and everything composed "
      "around it), 'fedgkt' (group knowledge transfer, gkt.*) or 'fedavg_bn' "
      '(FedAvg averaging batch-norm statistics too)')

  @classmethod
  def check(cls, config) -> None:
    k, data = config.clients_per_round, config.data
    # EMNIST's num_clients is "the first N writers", also a bound.
    if data.name != 'emnist' and k > data.num_clients:
      raise s.problem('clients_per_round', (
          f'is {k}; allowed: 1..data.num_clients ({data.num_clients})'))
