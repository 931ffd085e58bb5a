"""Codec chains from config values (`broadcast.*`, `uplink.*`)."""

from __future__ import annotations

from tff_compress.encoders import chain as chain_lib
from tff_compress.encoders import settings
from tff_compress.encoders import stages

CodecError = stages.CodecError

TRANSFORMS = settings.TRANSFORMS
BITS = settings.BITS


def build_chain(
    transform: str,
    subsample: float,
    bits: int,
    config_prefix: str,
    kashin_frame_ratio: float = 1.5,
    kashin_iterations: int = 3,
    kashin_clip_level: float = 1.0,
    hadamard_chunk: int = 4096,
) -> chain_lib.Chain:
  """transform -> subsample -> quantize -> bitpack (Caldas et al. 2018).

  Args:
    transform: 'none', 'hadamard' or 'kashin'.
    subsample: Fraction of coordinates kept, in (0, 1].
    bits: 1..8 or 16 for stochastic quantization; 32 sends float32 values.
    config_prefix: Config section named in errors ('broadcast', 'uplink').
    kashin_frame_ratio: Frame redundancy N/n (> 1).
    kashin_iterations: Kashin iterations (>= 1).
    kashin_clip_level: Initial clipping level in units of ||x||/sqrt(n).
    hadamard_chunk: Rotate in chunks of this power-of-two size.

  Raises:
    CodecError: naming `<config_prefix>.<key>` and the allowed values.
  """
  p = config_prefix
  if transform not in TRANSFORMS:
    raise CodecError(f'{p}.transform={transform!r} is not one of '
                     f'{", ".join(TRANSFORMS)}')
  if isinstance(bits, bool) or bits not in BITS:
    raise CodecError(f'{p}.bits={bits!r} is not one of '
                     f'{", ".join(map(str, BITS))} (32 = float32)')
  if not isinstance(subsample, (int, float)) or not 0.0 < subsample <= 1.0:
    raise CodecError(f'{p}.subsample={subsample!r} is not in (0, 1]')
  chain = []
  if transform == 'hadamard':
    chain.append(stages.HadamardStage(chunk_size=hadamard_chunk))
  elif transform == 'kashin':
    chain.append(stages.KashinStage(
        frame_ratio=kashin_frame_ratio, iterations=kashin_iterations,
        clip_level=kashin_clip_level))
  if subsample < 1.0:
    chain.append(stages.SubsampleStage(subsample))
  if bits != 32:
    chain.append(stages.QuantizeStage(bits))
    chain.append(stages.BitpackStage(bits))
  return chain_lib.Chain(chain)


def chain_for(codec: settings.CodecSettings) -> chain_lib.Chain:
  """The chain of one direction's settings (`broadcast.*` / `uplink.*`)."""
  return build_chain(transform=codec.transform, subsample=codec.subsample,
                     bits=codec.bits, config_prefix=codec.prefix)
