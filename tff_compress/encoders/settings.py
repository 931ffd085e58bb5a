"""The `broadcast.*` and `uplink.*` config sections: one codec per direction.

Each direction encodes every model tensor with the chain of Caldas et al.
2018 — transform -> subsample -> quantization -> bit packing
(`factory.build_chain`). The quantizer is Caldas' stochastic uniform one
(`quantizer='uniform'`, the default) or EDEN's (Vargaftik et al. 2022,
`quantizer='eden'`): Lloyd-Max levels for the rotated, near-Gaussian
coordinates and one scale per tensor, unbiased (uplink: averaged over
clients) or minimum-error (broadcast: one receiver, deterministic). Tensors with fewer than `min_size` elements
(biases) are sent as float32: their bytes are negligible, their errors are
not.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from tff_compress import settings_lib as s

# Config values; `factory.build_chain` accepts exactly these.
TRANSFORMS = ('none', 'hadamard', 'kashin', 'rotation')
BITS = (1, 2, 3, 4, 5, 6, 7, 8, 16, 32)
QUANTIZERS = ('uniform', 'eden')
SCALES = ('auto', 'unbiased', 'mse')
# EDEN's Lloyd-Max tables go up to 8 bits (`lloyd_max.MAX_BITS`, kept in
# step by tests/tff_compress/encoders/settings_test.py: importing it here
# would load numpy into every config validation).
EDEN_MAX_BITS = 8


@dataclasses.dataclass(frozen=True)
class CodecSettings(s.Section):
  """Codec of one direction; `BroadcastCodec` / `UplinkCodec` name it."""

  # The scale `scale='auto'` means with `quantizer='eden'`.
  AUTO_SCALE: ClassVar[str] = 'unbiased'

  transform: str = s.field(
      'none', s.choice(TRANSFORMS),
      'hadamard (randomized Walsh-Hadamard rotation of 4,096-element '
      'chunks), rotation (structured random rotation of the whole tensor), '
      'kashin (Kashin representation over a tight frame, redundancy 1.5) or '
      'none')
  # An int field: ml_collections would refuse a float override of an int
  # default, and turning every config's bits into a float is not worth
  # EDEN's fractional rates (`factory.build_chain` offers them to code).
  bits: int = s.field(
      32, s.choice(BITS, ' (32 = float32)'),
      'quantization bits per sent coordinate: 1..8 or 16 (16: uniform '
      'only); 32 = send float32')
  subsample: float = s.field(
      1.0, s.float_range(0.0, 1.0, lo_open=True),
      'fraction of coordinates sent, (0, 1] (rescaled when the scale is '
      'unbiased); below 1 bit per coordinate with bits=1')
  min_size: int = s.field(
      1000, s.int_range(0),
      'tensors with fewer elements (biases) are sent as float32')
  quantizer: str = s.field(
      'uniform', s.choice(QUANTIZERS),
      "uniform (Caldas et al.'s stochastic rounding between min and max) or "
      'eden (Lloyd-Max levels and one scale per tensor; use after a '
      'rotation)', added=True)
  scale: str = s.field(
      'auto', s.choice(SCALES),
      "eden's scale: unbiased, mse (minimum error, deterministic) or auto "
      '(broadcast: mse, uplink: unbiased); uniform is always unbiased',
      added=True)

  @property
  def prefix(self) -> str:
    """The config section ('broadcast' or 'uplink'), named in errors."""
    return self.SECTION

  @property
  def resolved_scale(self) -> str:
    """'unbiased' or 'mse': `scale`, with 'auto' resolved per direction."""
    if self.scale != 'auto':
      return self.scale
    return self.AUTO_SCALE if self.quantizer == 'eden' else 'unbiased'

  @classmethod
  def check(cls, config) -> None:
    """Keys valid for one quantizer only."""
    c = config[cls.SECTION]
    if c.quantizer == 'uniform' and c.scale == 'mse':
      raise s.problem(f'{cls.SECTION}.scale', (
          "is 'mse'; allowed with quantizer='uniform': auto, unbiased "
          "(stochastic rounding is unbiased; mse needs quantizer='eden')"))
    if c.quantizer == 'eden' and EDEN_MAX_BITS < c.bits < 32:
      raise s.problem(f'{cls.SECTION}.bits', (
          f"is {c.bits}; allowed with quantizer='eden': "
          f'1..{EDEN_MAX_BITS} or 32 (= float32)'))

  @property
  def is_identity(self) -> bool:
    return (self.transform == 'none' and self.bits == 32 and
            self.subsample == 1.0)


@dataclasses.dataclass(frozen=True)
class BroadcastCodec(CodecSettings):
  """Server -> client: the model each client receives (lossy broadcast).

  One receiver per message: EDEN's minimum-error scale has a lower error
  than the unbiased one and no seed-dependent noise, so 'auto' picks it.
  """

  SECTION = 'broadcast'
  AUTO_SCALE = 'mse'


@dataclasses.dataclass(frozen=True)
class UplinkCodec(CodecSettings):
  """Client -> server: each client's model update."""

  SECTION = 'uplink'
