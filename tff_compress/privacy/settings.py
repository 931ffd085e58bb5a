"""The `dp.*` and `secagg.*` config sections."""

from __future__ import annotations

import dataclasses

from tff_compress import settings_lib as s


@dataclasses.dataclass(frozen=True)
class DpSettings(s.Section):
  """Differential privacy: user-level DP-FedAvg or sample-level DP-SGD.

  `user`: DP-FedAvg — each client's update clipped to `clip` (or an adaptive
  clip tracking the `target_quantile` of update norms, starting at `clip`),
  Gaussian noise of std `noise_multiplier * clip` on the sum, uniform client
  weights. `sample`: local DP-SGD — per-microbatch clip `clip`, noise
  `noise_multiplier * clip`, `microbatches` per batch (0 = one per example).
  ε is reported at `delta`. Updates with non-finite entries or L2 norm >
  `zeroing_norm` are zeroed before the DP aggregation (and, with client
  faults simulated, before any aggregation).
  """

  SECTION = 'dp'

  mode: str = s.field('none', s.choice(('none', 'user', 'sample')),
                      'none, user (DP-FedAvg) or sample (local DP-SGD)')
  noise_multiplier: float = s.field(1.0, s.float_range(0.0),
                                    'σ: noise std in units of the clip')
  clip: float = s.field(1.0, s.float_range(0.0, lo_open=True),
                        'L2 clip C of an update (user) / microbatch (sample)')
  adaptive: bool = s.field(False, s.boolean,
                           'user: adaptive quantile clipping (Andrew et al.)')
  target_quantile: float = s.field(
      0.5, s.float_range(0.0, 1.0, lo_open=True, hi_open=True),
      'adaptive clipping: target quantile of update norms')
  clip_learning_rate: float = s.field(0.2, s.float_range(0.0),
                                      'adaptive clipping: geometric step')
  delta: float = s.field(1e-5,
                         s.float_range(0.0, 1.0, lo_open=True, hi_open=True),
                         'δ at which ε is reported')
  microbatches: int = s.field(
      0, s.int_range(0),
      'sample: microbatches per batch (0 = one per example)')
  zeroing_norm: float = s.field(
      100.0, s.float_range(0.0, lo_open=True),
      'updates with a non-finite entry or a larger L2 norm are zeroed')

  @property
  def user_level(self) -> bool:
    return self.mode == 'user'

  @property
  def sample_level(self) -> bool:
    return self.mode == 'sample'

  @classmethod
  def check(cls, config) -> None:
    dp = config.dp
    if (dp.mode == 'sample' and dp.microbatches and
        config.client.batch_size % dp.microbatches):
      raise s.problem('dp.microbatches', (
          f'is {dp.microbatches}; client.batch_size '
          f'({config.client.batch_size}) must be divisible by it (0 = one '
          'example per microbatch)'))
    if dp.mode == 'user' and dp.adaptive and dp.noise_multiplier > 0:
      # TFF spends part of the budget on the private quantile estimate,
      # with count noise 0.05 K; it needs noise_multiplier < 2 * 0.05 K.
      if dp.noise_multiplier >= 0.1 * config.clients_per_round:
        raise s.problem('dp.noise_multiplier', (
            f'is {dp.noise_multiplier}; with dp.adaptive=true it must be < '
            f'0.1 * clients_per_round ({0.1 * config.clients_per_round:g})'))


@dataclasses.dataclass(frozen=True)
class SecAggSettings(s.Section):
  """Secure aggregation of the uplink (`tff.aggregators.SecureSumFactory`).

  Coordinates are clipped to [-range, range] and stochastically rounded to
  `bits`-bit signed integers; the server only sees their sum.
  """

  SECTION = 'secagg'

  enabled: bool = s.field(False, s.boolean, 'secure sum of the uplink')
  bits: int = s.field(16, s.int_range(2, 24), 'integer code width')
  range: float = s.field(1.0, s.float_range(0.0, lo_open=True),
                         'coordinates are clipped to [-range, range]')

  @classmethod
  def check(cls, config) -> None:
    uplink = config.uplink
    if config.secagg.enabled and (
        uplink.transform, uplink.bits, uplink.subsample) != ('none', 32, 1.0):
      raise s.ConfigError(
          "config key 'secagg.enabled' is true with a compressing uplink "
          'codec; the secure sum needs values that add up as integers, the '
          'codec decodes per client: set uplink.transform=none, '
          'uplink.bits=32, uplink.subsample=1.0 (secagg.bits sets the width)')
