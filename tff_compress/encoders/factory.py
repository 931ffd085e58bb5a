"""Codec chains from config values (`broadcast.*`, `uplink.*`)."""

from __future__ import annotations

from tff_compress.encoders import chain as chain_lib
from tff_compress.encoders import eden
from tff_compress.encoders import lloyd_max
from tff_compress.encoders import rotation
from tff_compress.encoders import settings
from tff_compress.encoders import stages

CodecError = stages.CodecError

TRANSFORMS = settings.TRANSFORMS
BITS = settings.BITS
QUANTIZERS = settings.QUANTIZERS
SCALES = eden.SCALES


def _check_bits(bits, quantizer: str, p: str) -> None:
  if isinstance(bits, bool) or not isinstance(bits, (int, float)):
    ok = False
  elif quantizer == 'uniform':
    ok = bits in BITS
  else:
    ok = bits == 32 or 1 <= bits <= lloyd_max.MAX_BITS
  if ok:
    return
  if quantizer == 'uniform':
    allowed = f'{", ".join(map(str, BITS))} (32 = float32)'
  else:
    allowed = (f'1..{lloyd_max.MAX_BITS}, a fractional rate in '
               f'(1, {lloyd_max.MAX_BITS}) or 32 (= float32)')
  raise CodecError(f'{p}.bits={bits!r} is not one of {allowed} with '
                   f'{p}.quantizer={quantizer!r}')


def build_chain(
    transform: str,
    subsample: float,
    bits: float,
    config_prefix: str,
    kashin_frame_ratio: float = 1.5,
    kashin_iterations: int = 3,
    kashin_clip_level: float = 1.0,
    hadamard_chunk: int = 4096,
    quantizer: str = 'uniform',
    scale: str = 'unbiased',
) -> chain_lib.Chain:
  """transform -> subsample -> quantize -> bitpack (Caldas et al. 2018).

  With transform='rotation' the subsampling is the rotation's own (the
  first coordinates of each rotated row, `rotation.RotationStage`), not a
  separate stage; 3 rotation layers when EDEN's scale must be unbiased, else
  2 (enough to spread the tensor; one fewer FWHT per direction).

  Args:
    transform: 'none', 'hadamard' (4,096-element chunks), 'kashin' or
      'rotation' (whole-tensor structured rotation).
    subsample: Fraction of coordinates kept, in (0, 1].
    bits: 'uniform': 1..8 or 16; 'eden': 1..8 or a fractional rate in
      (1, 8) (time-sharing between the neighbouring integer rates); 32 sends
      float32 values.
    config_prefix: Config section named in errors ('broadcast', 'uplink').
    kashin_frame_ratio: Frame redundancy N/n (> 1).
    kashin_iterations: Kashin iterations (>= 1).
    kashin_clip_level: Initial clipping level in units of ||x||/sqrt(n).
    hadamard_chunk: Rotate in chunks of this power-of-two size.
    quantizer: 'uniform' (stochastic rounding between min and max, unbiased)
      or 'eden' (Lloyd-Max levels for the rotated, near-Gaussian
      coordinates, one scale per tensor).
    scale: 'unbiased' (EDEN's unbiased scale, rescaled subsampling: for the
      uplink, averaged over clients) or 'mse' (minimum-error scale and
      unscaled subsampling, deterministic given the seed: for the broadcast;
      needs quantizer='eden').

  Raises:
    CodecError: naming `<config_prefix>.<key>` and the allowed values.
  """
  p = config_prefix
  if transform not in TRANSFORMS:
    raise CodecError(f'{p}.transform={transform!r} is not one of '
                     f'{", ".join(TRANSFORMS)}')
  if quantizer not in QUANTIZERS:
    raise CodecError(f'{p}.quantizer={quantizer!r} is not one of '
                     f'{", ".join(QUANTIZERS)}')
  if scale not in SCALES:
    raise CodecError(f'{p}.scale={scale!r} is not one of '
                     f'{", ".join(SCALES)}')
  if scale == 'mse' and quantizer != 'eden':
    raise CodecError(f"{p}.scale='mse' needs {p}.quantizer='eden' (the "
                     'uniform quantizer is stochastic and unbiased)')
  _check_bits(bits, quantizer, p)
  if isinstance(subsample, bool) or not isinstance(
      subsample, (int, float)) or not 0.0 < subsample <= 1.0:
    raise CodecError(f'{p}.subsample={subsample!r} is not in (0, 1]')
  unbiased = scale == 'unbiased'
  chain = []
  if transform == 'hadamard':
    chain.append(stages.HadamardStage(chunk_size=hadamard_chunk))
  elif transform == 'kashin':
    chain.append(stages.KashinStage(
        frame_ratio=kashin_frame_ratio, iterations=kashin_iterations,
        clip_level=kashin_clip_level))
  elif transform == 'rotation':
    layers = 3 if quantizer == 'eden' and unbiased else 2
    chain.append(rotation.RotationStage(layers=layers, keep=subsample,
                                        unbiased=unbiased))
  if subsample < 1.0 and transform != 'rotation':
    chain.append(stages.SubsampleStage(subsample))
  if bits != 32:
    if quantizer == 'eden':
      chain.append(eden.EdenStage(bits, scale=scale))
    else:
      chain.append(stages.QuantizeStage(bits))
    chain.append(stages.BitpackStage(bits))
  return chain_lib.Chain(chain)


def chain_for(codec: settings.CodecSettings) -> chain_lib.Chain:
  """The chain of one direction's settings (`broadcast.*` / `uplink.*`).

  `scale='auto'` resolves per direction (`CodecSettings.resolved_scale`).
  """
  return build_chain(transform=codec.transform, subsample=codec.subsample,
                     bits=codec.bits, config_prefix=codec.prefix,
                     quantizer=codec.quantizer, scale=codec.resolved_scale)
