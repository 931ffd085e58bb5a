"""Privacy accounting: (ε, δ) of a run, computed with dp-accounting.

Nothing here is hand-rolled: each function builds the `dp_accounting.DpEvent`
that describes the mechanism the simulator actually runs and asks one of
dp-accounting's accountants for ε at the config's δ.

User level (DP-FedAvg, `dp.mode=user`). The privacy unit is a client's whole
dataset. Each round the simulator draws exactly K = `clients_per_round` of the
N = `data.num_clients` clients uniformly *without replacement*, every sampled
client's update is clipped to L2 norm ≤ C and the server adds N(0, σ²C²) to the
sum of the K updates (TFF's `DifferentiallyPrivateFactory`). The matching
accountant is the RDP bound for sampling without replacement of Wang, Balle &
Kasiviswanathan (AISTATS 2019, Thm. 27), which dp-accounting implements
(`SampledWithoutReplacementDpEvent`) for the *replace-one* neighbouring
relation only (N is public). Replacing one client's update u by u' changes the
sum by ‖u − u'‖ ≤ 2C, so the Gaussian's noise multiplier relative to that
sensitivity is σ/2. This bound is valid (not an approximation) for the
simulator's sampler; it is larger than the commonly quoted Poisson number.

`sampling='poisson'` gives that Poisson-subsampled Gaussian number (add/remove
one client, rate q = K/N, sensitivity C) — the approximation used by most
DP-FedAvg papers. It is exact only if each client joins each round
independently with probability q, which the simulator does not do; it is
reported for comparison only and never as the run's `epsilon`.

Sample level (local DP-SGD, `dp.mode=sample`). The privacy unit is one
training example of one client. A client holding n examples runs
S = ⌈E n / B⌉ local steps per participation; each step clips every
microbatch's gradient to C and adds N(0, σ²C²) to their sum. We account each
step as a Poisson-subsampled Gaussian with rate q = min(1, B/n) (the standard
DP-SGD treatment, also used by tensorflow-privacy's `compute_dp_sgd_privacy`:
shuffled fixed-size batches are not Poisson sampling, and n is treated as
public), under add/remove-one-example. With microbatches of more than one
example, adding an example changes one microbatch's clipped gradient by up to
2C, so the multiplier is halved (as tensorflow-privacy's
`compute_dp_sgd_privacy_statement` does). Client sampling is *not* credited
(no amplification): an example is charged for every round its client actually
took part in, and the reported ε is the maximum over clients.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional, Sequence

import dp_accounting
from dp_accounting import rdp

from tff_compress.privacy import settings

_REPLACE_ONE = dp_accounting.NeighboringRelation.REPLACE_ONE
_ADD_REMOVE = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
SAMPLINGS = ('uniform', 'poisson')


class AccountingError(ValueError):
  """Parameters that define no valid accounting."""


def user_level_event(num_clients: int, clients_per_round: int,
                     noise_multiplier: float, rounds: int,
                     sampling: str = 'uniform') -> dp_accounting.DpEvent:
  """The DpEvent of `rounds` rounds of DP-FedAvg (see module docstring).

  Args:
    num_clients: N, the population clients are sampled from.
    clients_per_round: K, clients per round (fixed size for 'uniform',
      expected size for 'poisson').
    noise_multiplier: σ, noise stddev in units of the clip C.
    rounds: Rounds run.
    sampling: 'uniform' (without replacement, replace-one) or 'poisson'
      (add/remove-one).

  Raises:
    AccountingError: Out-of-range arguments.
  """
  if sampling not in SAMPLINGS:
    raise AccountingError(f'sampling {sampling!r} is not one of {SAMPLINGS}')
  if not 1 <= clients_per_round <= num_clients:
    raise AccountingError(f'clients_per_round {clients_per_round} not in '
                          f'1..num_clients ({num_clients})')
  if noise_multiplier <= 0:
    raise AccountingError(f'noise_multiplier {noise_multiplier} must be > 0')
  if rounds < 1:
    raise AccountingError(f'rounds {rounds} must be >= 1')
  if sampling == 'uniform':
    one_round = dp_accounting.SampledWithoutReplacementDpEvent(
        source_dataset_size=num_clients, sample_size=clients_per_round,
        event=dp_accounting.GaussianDpEvent(noise_multiplier / 2))
  else:
    one_round = dp_accounting.PoissonSampledDpEvent(
        sampling_probability=clients_per_round / num_clients,
        event=dp_accounting.GaussianDpEvent(noise_multiplier))
  return dp_accounting.SelfComposedDpEvent(one_round, rounds)


@functools.lru_cache(maxsize=4096)
def user_level_epsilon(num_clients: int, clients_per_round: int,
                       noise_multiplier: float, rounds: int, delta: float,
                       sampling: str = 'uniform') -> float:
  """ε(δ) of `rounds` rounds of DP-FedAvg; inf when σ = 0.

  The RDP accountant is used for both samplings: dp-accounting's PLD
  accountant does not support sampling without replacement, and one
  accountant for both keeps the two numbers comparable.
  """
  _check_delta(delta)
  if noise_multiplier == 0:
    return math.inf
  relation = _REPLACE_ONE if sampling == 'uniform' else _ADD_REMOVE
  accountant = rdp.RdpAccountant(neighboring_relation=relation)
  accountant.compose(user_level_event(
      num_clients, clients_per_round, noise_multiplier, rounds, sampling))
  return float(accountant.get_epsilon(delta))


def dpsgd_steps(num_examples: int, batch_size: int, epochs: int) -> int:
  """Local DP-SGD steps of one participation: ⌈E n / B⌉ batches."""
  return -(-epochs * num_examples // batch_size)


def sample_level_event(num_examples: int, batch_size: int, epochs: int,
                       participations: int, noise_multiplier: float,
                       microbatch_size: int) -> dp_accounting.DpEvent:
  """DpEvent of one client's DP-SGD over all of its participations.

  Args:
    num_examples: n, the client's local examples.
    batch_size: B.
    epochs: E, local epochs per participation.
    participations: Rounds the client took part in.
    noise_multiplier: σ, noise stddev in units of the per-microbatch clip.
    microbatch_size: Examples per microbatch (1 = per-example clipping).
  """
  if min(num_examples, batch_size, epochs, microbatch_size) < 1:
    raise AccountingError('num_examples, batch_size, epochs and '
                          'microbatch_size must be >= 1')
  if noise_multiplier <= 0:
    raise AccountingError(f'noise_multiplier {noise_multiplier} must be > 0')
  sigma = noise_multiplier if microbatch_size == 1 else noise_multiplier / 2
  step = dp_accounting.PoissonSampledDpEvent(
      sampling_probability=min(1.0, batch_size / num_examples),
      event=dp_accounting.GaussianDpEvent(sigma))
  return dp_accounting.SelfComposedDpEvent(
      step, participations * dpsgd_steps(num_examples, batch_size, epochs))


@functools.lru_cache(maxsize=65536)
def _sample_level_epsilon_one(num_examples, batch_size, epochs,
                              participations, noise_multiplier,
                              microbatch_size, delta) -> float:
  accountant = rdp.RdpAccountant(neighboring_relation=_ADD_REMOVE)
  accountant.compose(sample_level_event(
      num_examples, batch_size, epochs, participations, noise_multiplier,
      microbatch_size))
  return float(accountant.get_epsilon(delta))


def sample_level_epsilon(client_sizes: Sequence[int],
                         participations: Sequence[int], batch_size: int,
                         epochs: int, noise_multiplier: float,
                         microbatch_size: int, delta: float) -> float:
  """Max over clients of the example-level ε(δ) of local DP-SGD.

  Args:
    client_sizes: n_i for every client.
    participations: r_i, rounds client i took part in so far.
    batch_size: B.
    epochs: E.
    noise_multiplier: σ.
    microbatch_size: Examples per microbatch.
    delta: δ.

  Returns:
    max_i ε_i; 0 if no client has participated; inf when σ = 0.
  """
  _check_delta(delta)
  if len(client_sizes) != len(participations):
    raise AccountingError('client_sizes and participations differ in length')
  pairs = {(int(n), int(r)) for n, r in zip(client_sizes, participations)
           if r > 0 and n > 0}
  if not pairs:
    return 0.0
  if noise_multiplier == 0:
    return math.inf
  return max(_sample_level_epsilon_one(n, batch_size, epochs, r,
                                       float(noise_multiplier),
                                       microbatch_size, delta)
             for n, r in pairs)


def _check_delta(delta: float) -> None:
  if not 0.0 < delta < 1.0:
    raise AccountingError(f'delta {delta} must be in (0, 1)')


@dataclasses.dataclass(frozen=True)
class RunAccountant:
  """ε after each round of one simulation.

  Attributes:
    dp: The `dp.*` settings (mode, noise multiplier, δ, clip, microbatches).
    clients_per_round: K, clients sampled per round.
    batch_size: Local batch size B (sample-level DP).
    epochs: Local epochs E (sample-level DP).
    client_sizes: Local training examples of every client, in client order.
  """

  dp: settings.DpSettings
  clients_per_round: int
  batch_size: int
  epochs: int
  client_sizes: tuple

  @property
  def mode(self) -> str:
    return self.dp.mode

  @property
  def microbatch_size(self) -> int:
    m = self.dp.microbatches or self.batch_size
    return self.batch_size // m

  def epsilon(self, round_num: int,
              participations: Optional[Sequence[int]] = None
              ) -> Optional[float]:
    """Cumulative ε after `round_num` rounds; None without DP.

    Args:
      round_num: Rounds completed (>= 1).
      participations: For sample-level DP, how many of those rounds each
        client took part in.
    """
    dp = self.dp
    if self.mode == 'none':
      return None
    if self.mode == 'user':
      return user_level_epsilon(
          len(self.client_sizes), self.clients_per_round,
          float(dp.noise_multiplier), int(round_num), float(dp.delta))
    if participations is None:
      raise AccountingError('sample-level DP needs the participation counts')
    return sample_level_epsilon(
        self.client_sizes, participations, self.batch_size, self.epochs,
        float(dp.noise_multiplier), self.microbatch_size, float(dp.delta))

  def statement(self, rounds: int,
                participations: Optional[Sequence[int]] = None) -> dict:
    """What the reported ε means, for `summary.json`."""
    dp = self.dp
    if self.mode == 'none':
      return {'mode': 'none'}
    out = {
        'mode': self.mode,
        'delta': dp.delta,
        'noise_multiplier': dp.noise_multiplier,
        'epsilon': self.epsilon(rounds, participations),
        'accountant': 'dp_accounting RDP',
    }
    if self.mode == 'user':
      out.update(
          unit='client', neighbouring='replace-one client',
          sampling=(f'{self.clients_per_round} of {len(self.client_sizes)} '
                    'clients per round, uniformly without replacement'),
          clip=dp.clip, adaptive_clip=dp.adaptive,
          epsilon_poisson_approximation=(
              user_level_epsilon(len(self.client_sizes),
                                 self.clients_per_round,
                                 float(dp.noise_multiplier), rounds,
                                 float(dp.delta), 'poisson')
              if dp.noise_multiplier > 0 else math.inf))
    else:
      out.update(
          unit='example', neighbouring='add/remove-one example',
          sampling=('each local step Poisson(B/n) as in DP-SGD accounting; '
                    'no credit for client sampling; max over clients'),
          clip=dp.clip, microbatch_size=self.microbatch_size)
    return out
