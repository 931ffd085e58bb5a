"""Encoding whose *decoded* value has a guaranteed L2 norm: DP + compression.

A DP aggregator's sensitivity is the norm of what the server adds up. With a
lossy uplink codec that is the decoded update, not the clipped one the client
started from: stochastic quantization adds a random error whose norm can be
several times ‖x‖ (1-bit codes decode to ±range per coordinate). TFF's
`DifferentiallyPrivateFactory` leaves this to the user; here the client
enforces it:

1. zero the whole update if any entry is non-finite (NaN/Inf);
2. clip it to global L2 norm ≤ C;
3. encode, decode locally and measure ‖decode(message)‖ = N;
4. if N > C·(1 − slack), multiply the message's floating-point entries by
   s = C·(1 − 2·slack)/N and decode again; repeat (at most `max_rescales`
   times); if the bound still fails, send the all-zero message.

Step 4 is exact because every codec stage is positively homogeneous of
degree 1 in the message's float entries: decode(s · floats, codes) =
s · decode(floats, codes) for s > 0. Per stage: the quantizer decodes
min + code·(max − min)/L, linear in (min, max); packed integer codes are not
touched; subsampling scatters its float values, the Hadamard and Kashin
transforms are linear maps of theirs, and raw float32 tensors (small ones
below `min_size`, or a bits=32 chain) are the values themselves. So scaling
the side scalars of a quantized tensor scales its decoded vector without
re-encoding and without changing a single code. `HOMOGENEOUS_STAGES` lists
the stage types this was verified for (`tests/.../bounded_test.py` checks the
identity per stage and the bound per chain); a chain with any other stage is
refused.

`slack` (1e-5 relative) leaves room for a decoder whose floating-point
re-association differs from the client's (another kernel, another device).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import tensorflow as tf

from tff_compress.encoders import prng
from tff_compress.encoders import stages as stages_lib
from tff_compress.encoders import structure

HOMOGENEOUS_STAGES = (
    stages_lib.HadamardStage,
    stages_lib.KashinStage,
    stages_lib.SubsampleStage,
    stages_lib.QuantizeStage,
    stages_lib.BitpackStage,
)
SLACK = 1e-5


class BoundedMessage(NamedTuple):
  """`message`: what `coder.decode` takes; `zeroed`: 1.0 if the input was
  non-finite; `scale`: factor applied to the message to meet the bound (1 if
  none; 0 if the all-zero fallback was sent)."""

  message: Any
  zeroed: tf.Tensor
  scale: tf.Tensor


def global_l2_norm(structure) -> tf.Tensor:
  """sqrt(Σ x²) over every tensor of `structure`, in float32."""
  squares = [tf.reduce_sum(tf.square(tf.cast(t, tf.float32)))
             for t in tf.nest.flatten(structure)]
  return tf.sqrt(tf.add_n(squares)) if squares else tf.constant(0.0)


def zero_if_non_finite(structure):
  """(structure, 0.) if every entry is finite, else (zeros, 1.)."""
  flat = tf.nest.flatten(structure)
  finite = tf.reduce_all(
      [tf.reduce_all(tf.math.is_finite(t)) for t in flat])
  out = tf.nest.map_structure(
      lambda t: tf.where(finite, t, tf.zeros_like(t)), structure)
  return out, 1.0 - tf.cast(finite, tf.float32)


def clip_by_global_l2_norm(structure, clip):
  """Scales `structure` by min(1, clip / ‖structure‖₂)."""
  norm = global_l2_norm(structure)
  factor = tf.minimum(1.0, tf.math.divide_no_nan(tf.cast(clip, tf.float32),
                                                 norm))
  return tf.nest.map_structure(lambda t: t * tf.cast(factor, t.dtype),
                               structure)


def check_homogeneous(coder: structure.StructureCodec) -> None:
  """Raises TypeError if a chain of `coder` has an unverified stage."""
  for chain in coder.chains:
    if chain is None:
      continue
    for stage in chain.stages:
      if not isinstance(stage, HOMOGENEOUS_STAGES):
        raise TypeError(
            f'codec stage {stage.name!r} ({type(stage).__name__}) is not '
            'known to decode homogeneously in its float side information; '
            'bounded_encode cannot guarantee the decoded norm')


def scale_message(message, factor: tf.Tensor):
  """Multiplies every floating-point entry of an encoded message by factor."""
  def scale(t):
    if t.dtype.is_floating:
      return t * tf.cast(factor, t.dtype)
    return t
  return tf.nest.map_structure(scale, message)


def bounded_encode_with_info(coder: structure.StructureCodec, value,
                             seed: tf.Tensor, clip,
                             max_rescales: int = 3) -> BoundedMessage:
  """Encodes `value` so that ‖coder.decode(message, seed)‖₂ ≤ clip.

  See the module docstring for the method. Graph-mode safe (usable inside a
  `tff.tensorflow.computation`).

  Args:
    coder: The structure codec (an identity codec sends raw float32).
    value: A structure matching the coder's value type.
    seed: int64 [2] encoding seed (the decoder needs the same one).
    clip: C > 0, Python float or scalar tensor.
    max_rescales: Rescale-and-check rounds before the zero fallback.

  Returns:
    A `BoundedMessage`.
  """
  check_homogeneous(coder)
  clip = tf.cast(clip, tf.float32)
  target = clip * (1.0 - SLACK)
  # Rescales aim a further SLACK lower, so float rounding of the rescaled
  # decode (~1e-7 relative) cannot leave it just above `target`: a factor
  # that close to 1 may not change a float32 at all.
  aim = clip * (1.0 - 2 * SLACK)
  value, zeroed = zero_if_non_finite(value)
  value = clip_by_global_l2_norm(value, aim)
  message = coder.encode(value, seed)

  def decoded_norm(m):
    return global_l2_norm(coder.decode(m, seed))

  def over(norm):
    return tf.logical_not(norm <= target)  # NaN counts as over

  # Iteration 0 only measures (factor 1), so the decoder is traced once.
  def cond(i, unused_m, norm, unused_scale):
    return tf.logical_or(
        tf.equal(i, 0), tf.logical_and(i <= max_rescales, over(norm)))

  def body(i, m, norm, scale):
    factor = tf.where(tf.equal(i, 0), 1.0, tf.math.divide_no_nan(aim, norm))
    m = scale_message(m, factor)
    return i + 1, m, decoded_norm(m), scale * factor

  _, message, norm, scale = tf.while_loop(
      cond, body, (tf.constant(0), message, target, tf.constant(1.0)))
  failed = over(norm)
  message = tf.cond(failed, lambda: scale_message(message, 0.0),
                    lambda: message)
  scale = tf.where(failed, 0.0, scale)
  return BoundedMessage(message, zeroed, scale)


def bounded_encode(coder: structure.StructureCodec, value, seed: tf.Tensor,
                   clip) -> Any:
  """The message of `bounded_encode_with_info` (decoded norm ≤ clip)."""
  return bounded_encode_with_info(coder, value, seed, clip).message


def client_seed(value, base_seed: int, round_num: tf.Tensor) -> tf.Tensor:
  """int64 [2] per-client codec seed, the rule of the encoded uplink.

  TFF computations carry no client identity; a digest of the client's own
  update (`prng.update_seed`) gives each client independent quantization
  noise while keeping the run deterministic, and a phone reproduces it.
  """
  return prng.update_seed(tf.nest.flatten(value), base_seed, round_num)
