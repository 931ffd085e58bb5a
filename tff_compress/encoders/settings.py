"""The `broadcast.*` and `uplink.*` config sections: one codec per direction.

Each direction encodes every model tensor with the chain of Caldas et al.
2018 — transform -> subsample -> stochastic quantization -> bit packing
(`factory.build_chain`). Tensors with fewer than `min_size` elements
(biases) are sent as float32: their bytes are negligible, their errors are
not.
"""

from __future__ import annotations

import dataclasses

from tff_compress import settings_lib as s

# Config values; `factory.build_chain` accepts exactly these.
TRANSFORMS = ('none', 'hadamard', 'kashin')
BITS = (1, 2, 3, 4, 5, 6, 7, 8, 16, 32)


@dataclasses.dataclass(frozen=True)
class CodecSettings(s.Section):
  """Codec of one direction; `BroadcastCodec` / `UplinkCodec` name it."""

  transform: str = s.field(
      'none', s.choice(TRANSFORMS),
      'hadamard (randomized Walsh-Hadamard rotation), kashin (Kashin '
      'representation over a tight frame, redundancy 1.5) or none')
  bits: int = s.field(
      32, s.choice(BITS, ' (32 = float32)'),
      'stochastic quantization bits: 1..8 or 16; 32 = send float32')
  subsample: float = s.field(
      1.0, s.float_range(0.0, 1.0, lo_open=True),
      'fraction of coordinates sent, (0, 1] (rescaled, unbiased)')
  min_size: int = s.field(
      1000, s.int_range(0),
      'tensors with fewer elements (biases) are sent as float32')

  @property
  def prefix(self) -> str:
    """The config section ('broadcast' or 'uplink'), named in errors."""
    return self.SECTION

  @property
  def is_identity(self) -> bool:
    return (self.transform == 'none' and self.bits == 32 and
            self.subsample == 1.0)


@dataclasses.dataclass(frozen=True)
class BroadcastCodec(CodecSettings):
  """Server -> client: the model each client receives (lossy broadcast)."""

  SECTION = 'broadcast'


@dataclasses.dataclass(frozen=True)
class UplinkCodec(CodecSettings):
  """Client -> server: each client's model update."""

  SECTION = 'uplink'
