"""EDEN quantization: optimal Gaussian levels and one scale per tensor.

After a random rotation the coordinates of y = R x are close to i.i.d.
N(0, sigma^2), sigma^2 = ||x||^2 / n, whatever x looked like. EDEN
(Vargaftik et al., ICML 2022; DRIVE, NeurIPS 2021, for 1 bit) therefore
quantizes z = y / sigma-hat, sigma-hat = ||y|| / sqrt(n), with the b-bit
Lloyd-Max quantizer of N(0, 1) (`lloyd_max.py`: the levels minimising the
expected squared error, D_b = 0.363, 0.117, 0.0345, 0.0095 at b = 1..4)
instead of a uniform grid between the tensor's min and max, and sends
codes = #{boundaries <= z} (b bits each, packed by `BitpackStage`) plus one
float32 scale S. The receiver decodes y-hat = S q, q = centroids[codes]:

* unbiased scale S = ||y||^2 / <y, q>. Then <y-hat, y> = ||y||^2 exactly,
  and with a uniformly random rotation E[R^T y-hat] = x (DRIVE Thm. 1;
  `rotation.RotationStage` with 3 layers is close enough: its docstring has
  the measurement). Expected vNMSE = D_b / (1 - D_b): 0.571, 0.133, 0.0358,
  0.00959 at b = 1..4. For the uplink, where the server averages many
  clients' independent errors.
* minimum-error scale S = <y, q> / ||q||^2, the least-squares fit of S q to
  y (by the centroid condition S ~= sigma): vNMSE ~= D_b, biased (shrinks
  x by 1 - D_b on average). For the broadcast: one receiver, no averaging,
  and deterministic given the seed.

One scale per tensor (per rate segment), not per chunk: after a
whole-tensor rotation every chunk has the same variance, so per-chunk
scales only fit sampling noise (a numpy prototype with one scale per
2,048-coordinate row of the dense1 update gained 0.3 % vNMSE at 1 bit for
1.6 % more bits). After the chunked `HadamardStage` the chunks' variances
differ and a per-tensor scale is poor; use `rotation.RotationStage`.

The codes need no randomness: the quantizer is deterministic and all the
randomness is in the rotation before it, so this stage is not unbiased on
its own (`unbiased = False`); `unbiased_if_rotated` tells `Chain.unbiased`
that it is after a `haar_like` stage.

Fractional rates b in (1, 8): the first round((b - floor b) n) coordinates
get the ceil(b)-bit quantizer and the rest the floor(b)-bit one, each
segment with its own sigma-hat and scale (their unbiased scales differ,
1 / (1 - D_b): 1.57 at 1 bit, 1.13 at 2 bits). After a rotation all
coordinates are alike, so a fixed split is as good as a random one. This
uses extra bits better than redundancy: at EDEN's padded rate on the
1,605,632-float dense kernel (1.306 b bits) it beats the padded rotation
(benchmarks/codec_quality.py).

Only TFLite builtins: MUL, SUM, SQRT, GREATER_EQUAL, CAST, ADD_N, GATHER,
MINIMUM/MAXIMUM, SELECT. sigma-hat and S come from float sums whose order
can differ between TensorFlow and TFLite kernels, so a coordinate within an
ulp of a boundary can get the neighbouring code on a phone; given the same
sigma-hat the codes are bit-identical.
"""

from __future__ import annotations

import collections
import functools
import math
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from tff_compress.encoders import lloyd_max
from tff_compress.encoders import stages

SCALES = ('unbiased', 'mse')


def _row_sum(t: tf.Tensor) -> tf.Tensor:
  # Reduced over axis 1 of [1, n], as `stages.QuantizeStage` (a full
  # reduction of a rank-1 tensor misbehaves in TFLite 2.14 next to
  # variable assignments).
  return tf.reduce_sum(tf.reshape(t, [1, -1]), axis=1)[0]


def _safe_ratio(num: tf.Tensor, den: tf.Tensor) -> tf.Tensor:
  """num / den, or 0 where den <= 0 (DivNoNan has no TFLite builtin)."""
  positive = den > 0
  return tf.where(positive, num / tf.where(positive, den, 1.0), 0.0)


# Up to this many bits the codes are a sum of 2^b - 1 comparisons; above,
# a lookup table does it in a fixed ~10 element-wise ops (TF's Bucketize
# kernel is 3-6x slower than either on 1.6 M values).
_COMPARE_MAX_BITS = 3
_NEVER = float(np.finfo(np.float32).max)


class _Lookup(NamedTuple):
  """Cell tables that turn z into its code with one comparison.

  z's cell is g = floor((z + radius) / width), clipped to [0, cells). Cells
  are at most 1/3.5 of the smallest gap between boundaries wide, so the
  three cells g - 1, g, g + 1 together (narrower than any gap) hold at most
  one boundary: `base[g]` counts the boundaries below cell g - 1 and
  `boundary[g]` is the one in cells g - 1 .. g + 1 (or never). code =
  base[g] + (z >= boundary[g]) is then exact even if rounding puts z in a
  neighbouring cell (its float error is ~1e-4 of a cell).
  """

  radius: float
  width: float
  base: np.ndarray
  boundary: np.ndarray


@functools.lru_cache(maxsize=None)
def _lookup(bits: int) -> _Lookup:
  t = lloyd_max.gaussian_table(bits).boundaries.astype(np.float32).astype(
      np.float64)
  width = float(np.min(np.diff(t))) / 3.5
  radius = float(t[-1]) + 3 * width
  cells = int(math.ceil(2 * radius / width))
  width = 2 * radius / cells
  lower = -radius + width * (np.arange(cells) - 1)  # of cell g - 1
  upper = lower + 3 * width                          # of cell g + 1
  below = np.searchsorted(t, lower, side='left')  # boundaries < lower
  following = t[np.minimum(below, len(t) - 1)]     # the first >= lower
  boundary = np.where((below < len(t)) & (following < upper), following,
                      _NEVER)
  return _Lookup(radius, width, below.astype(np.int32),
                 boundary.astype(np.float32))


def codes_of(y: tf.Tensor, sigma: tf.Tensor, bits: int) -> tf.Tensor:
  """int32 codes #{j : y >= sigma t_j}, t = the b-bit Lloyd-Max boundaries.

  Equivalent to bucketizing z = y / sigma, but compares y with the scaled
  boundaries (one multiply fewer per value). sigma must be > 0.
  """
  table = lloyd_max.gaussian_table(bits)
  if bits <= _COMPARE_MAX_BITS:
    return tf.add_n([tf.cast(y >= sigma * float(t), tf.int32)
                     for t in table.boundaries.astype(np.float32)])
  lut = _lookup(bits)
  cells = len(lut.base)
  g = (y * ((1.0 / lut.width) / sigma)) + lut.radius / lut.width
  # Truncation is the floor here: g is clipped to [0, cells - 1] first.
  g = tf.cast(tf.clip_by_value(g, 0.0, cells - 1.0), tf.int32)
  above = y >= tf.gather(sigma * tf.constant(lut.boundary), g)
  return tf.gather(tf.constant(lut.base), g) + tf.cast(above, tf.int32)


class EdenStage(stages.Stage):
  """EDEN quantization of a (rotated) vector; see the module docstring.

  Args:
    bits: 1..8, or a fractional rate in (1, 8).
    scale: 'unbiased' (S = ||y||^2 / <y, q>) or 'mse' (S = <y, q> / ||q||^2).

  Raises:
    CodecError: a bad argument.
  """

  name = 'eden'
  unbiased = False  # deterministic; see `unbiased_if_rotated`
  homogeneous = True  # decode S q is linear in S
  commutes_with_sum = False

  def __init__(self, bits: float, scale: str = 'unbiased'):
    ok = (not isinstance(bits, bool) and isinstance(bits, (int, float)) and
          1 <= bits <= lloyd_max.MAX_BITS)
    if not ok:
      raise stages.CodecError(
          f'eden bits must be 1..{lloyd_max.MAX_BITS} or a fractional rate '
          f'in (1, {lloyd_max.MAX_BITS}), got {bits!r}')
    if scale not in SCALES:
      raise stages.CodecError(
          f'eden scale {scale!r} is not one of {", ".join(SCALES)}')
    self.bits = bits
    self.scale = scale
    self.unbiased_if_rotated = scale == 'unbiased'

  def _segments(self, n: int) -> list[tuple[int, int]]:
    return stages.rate_segments(n, self.bits)

  def side_spec(self, n):
    return {'scale': (tf.float32, len(self._segments(n)))}

  def values_dtype(self):
    return tf.int32

  def _encode_segment(self, y: tf.Tensor, bits: int):
    k = y.shape[0]
    ss = _row_sum(y * y)
    # sigma-hat = ||y|| / sqrt(k); any positive value for y = 0 (S is 0).
    sigma = tf.sqrt(tf.where(ss > 0, ss, 1.0) * (1.0 / k))
    codes = codes_of(y, sigma, bits)
    centroids = tf.constant(lloyd_max.gaussian_table(bits).centroids,
                            tf.float32)
    q = tf.gather(centroids, codes)
    yq = _row_sum(y * q)
    if self.scale == 'unbiased':
      s = _safe_ratio(ss, yq)
    else:
      s = _safe_ratio(yq, _row_sum(q * q))
    return codes, s

  def encode(self, x, seed):
    del seed
    codes, scales, start = [], [], 0
    segments = self._segments(x.shape[0])
    for k, b in segments:
      part = x if len(segments) == 1 else x[start:start + k]
      c, s = self._encode_segment(part, b)
      codes.append(c)
      scales.append(s)
      start += k
    return collections.OrderedDict(
        values=codes[0] if len(codes) == 1 else tf.concat(codes, 0),
        scale=tf.stack(scales))

  def decode(self, encoded, n, seed):
    del seed
    codes, scales = encoded['values'], encoded['scale']
    out, start = [], 0
    segments = self._segments(n)
    for i, (k, b) in enumerate(segments):
      part = codes if len(segments) == 1 else codes[start:start + k]
      centroids = tf.constant(lloyd_max.gaussian_table(b).centroids,
                              tf.float32)
      # S folded into the 2^b levels: one pass over the codes.
      out.append(tf.gather(scales[i] * centroids, part))
      start += k
    return out[0] if len(out) == 1 else tf.concat(out, 0)
