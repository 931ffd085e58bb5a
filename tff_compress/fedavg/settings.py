"""The `client.*` and `server.*` config sections of FedAvg-family training."""

from __future__ import annotations

import dataclasses

from tff_compress import settings_lib as s
from tff_compress.dropout import settings as dropout_settings
from tff_compress.encoders import settings as codec_settings
from tff_compress.faults import settings as fault_settings
from tff_compress.privacy import settings as privacy_settings
from tff_compress.pruning import settings as pruning_settings
from tff_compress.tiers import settings as tier_settings

# FedProx's mu when client.work=fedprox does not set it (the middle of the
# 0.001-1 range Li et al. 2020 sweep).
DEFAULT_PROXIMAL_STRENGTH = 0.01


@dataclasses.dataclass(frozen=True)
class ClientSettings(s.Section):
  """Local training on a client (FedGKT's edge training uses epochs/batch)."""

  SECTION = 'client'

  work: str = s.field(
      'sgd', s.registry_choice('tff_compress.fedavg.registry',
                               'CLIENT_WORKS'),
      'local training: sgd (TFF model-delta client work; DP-SGD with '
      'dp.mode=sample) or fedprox (local SGD on loss + (mu/2) ||w - '
      'w_received||^2, mu = client.proximal_strength)')
  learning_rate: float = s.field(0.05, s.float_range(0.0, lo_open=True),
                                 'local SGD step size')
  momentum: float = s.field(0.0, s.float_range(0.0, 1.0, hi_open=True),
                            'local SGD momentum (0 = plain SGD)')
  epochs: int = s.field(1, s.int_range(1), 'local epochs E')
  batch_size: int = s.field(20, s.int_range(1), 'local batch size B')
  proximal_strength: float = s.field(
      DEFAULT_PROXIMAL_STRENGTH, s.float_range(0.0),
      'client.work=fedprox: mu of the proximal term (mu/2) ||w - w_received||^2'
      ' added to the local loss (0 = plain local SGD)', added=True)

  @classmethod
  def check(cls, config) -> None:
    c = config.client
    if (c.work != 'fedprox' and
        c.proximal_strength != DEFAULT_PROXIMAL_STRENGTH):
      raise s.problem('client.proximal_strength', (
          f'is {c.proximal_strength} with client.work={c.work!r}; only '
          "client.work='fedprox' uses it"))
    if c.work == 'fedprox' and config.dp.mode == 'sample':
      raise s.problem('client.work', (
          "is 'fedprox' with dp.mode='sample'; DP-SGD is its own client "
          "work (use client.work='sgd')"))


@dataclasses.dataclass(frozen=True)
class ServerSettings(s.Section):
  """The server optimizer applying the mean update (FedAvg/FedAvgM/FedAdam)."""

  SECTION = 'server'

  optimizer: str = s.field(
      'sgd', s.registry_choice('tff_compress.fedavg.registry',
                               'SERVER_OPTIMIZERS'),
      'sgd (lr 1 = FedAvg, momentum = FedAvgM) or adam (FedAdam)')
  learning_rate: float = s.field(1.0, s.float_range(0.0, lo_open=True),
                                 'server step size')
  momentum: float = s.field(0.0, s.float_range(0.0, 1.0, hi_open=True),
                            'server momentum (sgd)')
  beta_1: float = s.field(0.9, s.float_range(0.0, 1.0, hi_open=True),
                          'FedAdam')
  beta_2: float = s.field(0.99, s.float_range(0.0, 1.0, hi_open=True),
                          'FedAdam')
  epsilon: float = s.field(1e-3, s.float_range(0.0, lo_open=True),
                           'FedAdam')


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
  """The sections a FedAvg-family learning process is built from."""

  seed: int
  clients_per_round: int
  client: ClientSettings
  server: ServerSettings
  broadcast: codec_settings.BroadcastCodec
  uplink: codec_settings.UplinkCodec
  dropout: dropout_settings.DropoutSettings
  dp: privacy_settings.DpSettings
  secagg: privacy_settings.SecAggSettings
  faults: fault_settings.FaultSettings
  tiers: tier_settings.TierSettings
  pruning: pruning_settings.PruningSettings
  # G simulated clients per TFF client (`runtime.cohort_size`; 1 = off).
  cohort_size: int = 1

  @classmethod
  def of(cls, settings) -> 'TrainingSettings':
    """From a run's settings (`config_lib.Settings`)."""
    own = ('seed', 'clients_per_round', 'cohort_size')
    return cls(seed=settings.run.seed,
               clients_per_round=settings.run.clients_per_round,
               cohort_size=settings.runtime.cohort_size,
               **{f.name: getattr(settings, f.name)
                  for f in dataclasses.fields(cls) if f.name not in own})

  @property
  def uniform_weights(self) -> bool:
    """DP-FedAvg and the secure sum average clients uniformly.

    DP-FedAvg is unweighted (a client's example count is data-dependent
    and would scale its influence past the clip), and the secure sum adds
    integer codes of a fixed range.
    """
    return self.dp.mode != 'none' or self.secagg.enabled
