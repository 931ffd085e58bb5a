"""Codec stages (Caldas et al. 2018): tiny, composable, deterministic.

Every stage maps a float32 rank-1 tensor of static length n to a dict whose
'values' entry feeds the next stage, plus side information ('min', 'max', ...)
that must cross the network. All randomness is stateless, from a `seed`
(int64 [2]) that both sides know (the broadcast sends it; see
`tff_compress.learning.encoded`), drawn from the integer-hash PRNG of
`prng.py`. Everything is pure TensorFlow, usable in graph mode inside
`tff.tensorflow.computation`, and converts to TFLite builtin ops only (no
Flex), so a phone's TFLite graph runs the same encode/decode
(`mobile_export`).
"""

from __future__ import annotations

import collections
import math

import tensorflow as tf

from tff_compress.encoders import prng
from tff_compress.encoders import wire


class CodecError(ValueError):
  """Bad codec settings; the message names the config key."""


PayloadError = wire.PayloadError


def next_pow2(n: int) -> int:
  return 1 << max(0, (int(n) - 1).bit_length())


def random_signs(n: int, seed: tf.Tensor) -> tf.Tensor:
  """n i.i.d. Rademacher signs (float32 ±1) from a stateless seed."""
  return prng.signs(n, seed)


def _sylvester(n: int) -> tf.Tensor:
  h = [[1.0]]
  while len(h) < n:
    h = [r + r for r in h] + [r + [-v for v in r] for r in h]
  return tf.constant(h, tf.float32)


def fwht(x: tf.Tensor) -> tf.Tensor:
  """Orthonormal fast Walsh-Hadamard transform along the last axis.

  x: float32 [batch, n] with n = 2^k. Uses H_n = H_a (x) H_b with a = 2^(k//2),
  b = n / a: reshaping each row to an a x b matrix X, H_n x = vec(H_a X H_b),
  i.e. two small dense matmuls costing 2 n (a + b) FLOPs instead of n log2 n
  butterfly adds; on CPU the matmuls run several times faster than log2(n)
  reshape/add steps (benchmarks/codec_speed.py). H_a X is one matmul
  broadcast over the rows and X H_b one plain matmul, so no transposes are
  materialised (half the time of the einsum form, same bits). The result
  (natural / Sylvester order, scaled by 1/sqrt(n)) is symmetric and
  orthonormal, hence its own inverse.
  """
  batch, n = x.shape
  if n & (n - 1):
    raise ValueError(f'fwht needs a power-of-two length, got {n}')
  k = n.bit_length() - 1
  a = 1 << (k // 2)
  b = n // a
  m = tf.matmul(_sylvester(a), tf.reshape(x, [-1, a, b]))
  m = tf.matmul(tf.reshape(m, [-1, b]), _sylvester(b))
  return tf.reshape(m, [-1 if batch is None else batch, n]) * (
      1.0 / math.sqrt(n))


class Stage:
  """Base class; see the module docstring for the contract.

  Each stage declares, as class (or instance) attributes, the properties the
  rest of the pipeline relies on; the defaults are the conservative ones and
  every stage states its own. The contract test checks each declaration.

  Attributes:
    name: Prefix of the stage's side-information entries ('<name>/<key>').
    unbiased: E_seed[decode(encode(x, seed), seed)] = x for every x.
    homogeneous: decode is positively homogeneous of degree 1 in the float
      entries of the message: decode(s * floats, ints) = s * decode(floats,
      ints) for s > 0 (the DP decoded-norm bound, privacy/bounded.py, scales
      a message's floats to bound its decoded norm).
    commutes_with_sum: decode(a + b) = decode(a) + decode(b) for messages of
      one seed (every entry float): sums can be decoded once.
    haar_like: encode applies a seeded random orthonormal map (decode: its
      transpose) close enough to a uniformly random rotation that EDEN's
      unbiased scale after it gives an unbiased decode (`Chain.unbiased`).
    unbiased_if_rotated: a deterministic quantizer whose decode is unbiased
      when its input is a `haar_like` rotation of the vector (EDEN).
  """

  name = 'stage'
  unbiased = False
  homogeneous = False
  commutes_with_sum = False
  haar_like = False
  unbiased_if_rotated = False

  def output_length(self, n: int) -> int:
    return n

  def encode(self, x: tf.Tensor, seed: tf.Tensor) -> dict:
    raise NotImplementedError

  def decode(self, encoded: dict, n: int, seed: tf.Tensor) -> tf.Tensor:
    raise NotImplementedError

  def side_spec(self, n: int) -> dict:
    """{key: (dtype, num_elements)} of the side information for length n."""
    del n
    return {}

  def values_dtype(self) -> tf.DType:
    return tf.float32


class HadamardStage(Stage):
  """Randomized Hadamard rotation: y = H D pad(x), D = random ±1 signs.

  Spreads a vector's energy evenly over coordinates, so the min/max range
  seen by the quantizer shrinks from the outliers' to about ||x|| sqrt(2 ln n
  / n). The padded vector is rotated in independent chunks of at most
  `chunk_size` (a power of two), halved while the zero padding would exceed
  n/32, so padding costs ~3 % instead of up to 2x.
  """

  name = 'hadamard'
  unbiased = True  # exact
  homogeneous = True  # linear
  commutes_with_sum = True
  # One randomized Hadamard layer is far from a uniform rotation: EDEN's
  # scale after it leaves a large bias (rotation.py).
  haar_like = False

  def __init__(self, chunk_size: int = 4096):
    if chunk_size < 2 or chunk_size & (chunk_size - 1):
      raise CodecError(f'hadamard chunk size {chunk_size} is not a power of 2')
    self.chunk_size = chunk_size

  def _width(self, n: int) -> int:
    # Halve the chunk while zero padding exceeds 1/32 of n (down to 256).
    w = min(self.chunk_size, next_pow2(n))
    while w > 256 and -(-n // w) * w - n > n / 32:
      w //= 2
    return w

  def output_length(self, n: int) -> int:
    w = self._width(n)
    return -(-n // w) * w

  def encode(self, x, seed):
    n = x.shape[0]
    m, w = self.output_length(n), self._width(n)
    padded = prng.flip_signs(tf.pad(x, [[0, m - n]]), seed)
    y = fwht(tf.reshape(padded, [m // w, w]))
    return collections.OrderedDict(values=tf.reshape(y, [m]))

  def decode(self, encoded, n, seed):
    m, w = self.output_length(n), self._width(n)
    y = tf.reshape(encoded['values'], [m // w, w])
    x = prng.flip_signs(tf.reshape(fwht(y), [m]), seed)
    return x[:n]


class KashinStage(Stage):
  """Kashin's representation over randomized-Hadamard tight frames.

  Lyubarskii & Vershynin (2010): with a tight frame U (c x F, F > c), every
  x has coefficients a with U a = x and ||a||_inf <= K ||x||_2 / sqrt(F).
  U is the first c rows of (H E H D)^T for random sign diagonals D, E: one
  randomized Hadamard matrix is not enough, because zero-padding x at the end
  of a Sylvester-ordered H makes the coefficients repeat in blocks (exactly
  duplicated when c <= F/2), which gives no flatter coefficients than the
  plain rotation; the second rotation removes that structure. We
  compute them as tfmot does: `iterations - 1` rounds of "analyse the
  residual, clip at level L, add, re-synthesise", L shrinking by `eta`, then
  one unclipped round so U a = x exactly (decode is exact, linear).

  The vector is cut into chunks of c = floor(F / frame_ratio) coordinates,
  each with its own frame of F = `frame_size` coefficients (smaller tensors:
  F = next power of two >= frame_ratio * n), so the redundancy is
  frame_ratio, not up to 2x more from power-of-two rounding.
  L_0 = clip_level * ||x_chunk|| / sqrt(c).
  """

  name = 'kashin'
  unbiased = True  # exact
  homogeneous = True  # decode is linear in the coefficients
  commutes_with_sum = True

  def __init__(self, frame_ratio: float = 2.0, iterations: int = 3,
               clip_level: float = 1.0, eta: float = 0.9,
               frame_size: int = 4096):
    if frame_ratio <= 1.0:
      raise CodecError(f'kashin frame ratio must be > 1, got {frame_ratio}')
    if iterations < 1:
      raise CodecError(f'kashin iterations must be >= 1, got {iterations}')
    if clip_level <= 0:
      raise CodecError(f'kashin clip level must be > 0, got {clip_level}')
    if frame_size < 2 or frame_size & (frame_size - 1):
      raise CodecError(f'kashin frame size {frame_size} is not a power of 2')
    self.frame_ratio = frame_ratio
    self.iterations = iterations
    self.clip_level = clip_level
    self.eta = eta
    self.frame_size = frame_size

  def _geometry(self, n: int) -> tuple[int, int, int]:
    """(chunks, c = inputs per chunk, F = coefficients per chunk)."""
    f = min(self.frame_size, next_pow2(math.ceil(self.frame_ratio * n)))
    c = max(1, min(n, int(f // self.frame_ratio)))
    return -(-n // c), c, f

  def output_length(self, n: int) -> int:
    chunks, _, f = self._geometry(n)
    return chunks * f

  def _analyse(self, r, signs, f):
    """a = H E H D pad(r): the frame analysis (coefficients of r)."""
    c = r.shape[1]
    d, e = signs
    return fwht(fwht(tf.pad(r, [[0, 0], [0, f - c]]) * d) * e)

  def _synthesise(self, a, signs, c):
    """x = (D H E H a)[:c], the adjoint (M is orthonormal: a tight frame)."""
    d, e = signs
    return (fwht(fwht(a) * e) * d)[:, :c]

  def _signs(self, chunks, f, seed):
    return tuple(
        tf.reshape(random_signs(chunks * f, prng.fold_in(seed, k)),
                   [chunks, f]) for k in (0, 1))

  def encode(self, x, seed):
    n = x.shape[0]
    chunks, c, f = self._geometry(n)
    xs = tf.reshape(tf.pad(x, [[0, chunks * c - n]]), [chunks, c])
    signs = self._signs(chunks, f, seed)
    level = self.clip_level * tf.norm(xs, axis=1, keepdims=True) / math.sqrt(c)
    coefficients = tf.zeros([chunks, f], tf.float32)
    residual = xs
    for _ in range(self.iterations - 1):
      coefficients += tf.clip_by_value(
          self._analyse(residual, signs, f), -level, level)
      residual = xs - self._synthesise(coefficients, signs, c)
      level *= self.eta
    coefficients += self._analyse(residual, signs, f)
    return collections.OrderedDict(values=tf.reshape(coefficients, [-1]))

  def decode(self, encoded, n, seed):
    chunks, c, f = self._geometry(n)
    signs = self._signs(chunks, f, seed)
    a = tf.reshape(encoded['values'], [chunks, f])
    return tf.reshape(self._synthesise(a, signs, c), [-1])[:n]


class SubsampleStage(Stage):
  """Keeps k = max(1, round(fraction * n)) coordinates chosen by the seed.

  Only the kept values cross the network (the receiver re-derives the
  indices from the seed). Values are scaled by n / k, so each coordinate's
  decode is x_i with probability k/n and 0 otherwise: unbiased, with
  variance x_i^2 (n/k - 1).
  """

  name = 'subsample'
  unbiased = True
  homogeneous = True
  commutes_with_sum = True  # decode is linear for a fixed seed

  def __init__(self, fraction: float):
    if not 0.0 < fraction <= 1.0:
      raise CodecError(f'subsample fraction must be in (0, 1], got {fraction}')
    self.fraction = fraction

  def output_length(self, n: int) -> int:
    return max(1, int(round(self.fraction * n)))

  def _indices(self, n, seed):
    # The k largest of n distinct hashes: a uniformly random k-subset with
    # no ties, so every runtime's top-k selects the same positions.
    k = self.output_length(n)
    h = prng.hashes(n, seed)
    return tf.sort(tf.math.top_k(h, k=k, sorted=False).indices)

  def encode(self, x, seed):
    n = x.shape[0]
    k = self.output_length(n)
    values = tf.gather(x, self._indices(n, seed)) * (n / k)
    return collections.OrderedDict(values=values)

  def decode(self, encoded, n, seed):
    idx = self._indices(n, seed)
    return tf.scatter_nd(idx[:, None], encoded['values'], [n])


class QuantizeStage(Stage):
  """Stochastic uniform quantization to `bits` bits with min/max side info.

  With L = 2^bits - 1 levels over [min, max], x maps to t = (x - min) L /
  (max - min) and is rounded up with probability t - floor(t): E[decode] = x
  and Var <= ((max - min) / L)^2 / 4 per coordinate. A constant tensor
  (max == min) is sent exactly as min. The uniforms have 16-bit resolution
  (`prng.uniform`): the rounding-up probability is off by at most 2^-17.
  """

  name = 'quantize'
  unbiased = True
  homogeneous = True  # min + code (max - min) / L is linear in (min, max)
  commutes_with_sum = False

  def __init__(self, bits: int):
    if bits not in (1, 2, 3, 4, 5, 6, 7, 8, 16):
      raise CodecError(f'quantization bits must be 1..8 or 16, got {bits}')
    self.bits = bits
    self.levels = float(2**bits - 1)

  def side_spec(self, n):
    return {'min': (tf.float32, 1), 'max': (tf.float32, 1)}

  def values_dtype(self):
    return tf.int32

  def encode(self, x, seed):
    # Reduced over axis 1 of [1, n]: TFLite 2.14's full reduction of a
    # rank-1 tensor read from resource variables returns garbage when the
    # graph also assigns them (the on-device trainer's encode_update).
    row = tf.reshape(x, [1, -1])
    lo = tf.reduce_min(row, axis=1)[0]
    hi = tf.reduce_max(row, axis=1)[0]
    span = hi - lo
    # levels / span, or 0 for a constant tensor (DivNoNan has no TFLite op).
    scale = tf.where(span > 0, self.levels / tf.where(span > 0, span, 1.0),
                     0.0)
    t = (x - lo) * scale
    floor = tf.floor(t)
    u = prng.uniform(x.shape[0], seed)
    codes = floor + tf.cast(u < t - floor, tf.float32)
    codes = tf.clip_by_value(codes, 0.0, self.levels)
    return collections.OrderedDict(
        values=tf.cast(codes, tf.int32), min=tf.reshape(lo, [1]),
        max=tf.reshape(hi, [1]))

  def decode(self, encoded, n, seed):
    lo, hi = encoded['min'][0], encoded['max'][0]
    codes = tf.cast(encoded['values'], tf.float32)
    return lo + codes * ((hi - lo) / self.levels)


PACK_BITS = (1, 2, 3, 4, 5, 6, 7, 8, 16)


def rate_segments(n: int, bits: float) -> list[tuple[int, int]]:
  """[(count, bits)]: how n codes at a (possibly fractional) rate are split.

  Integer `bits`: one segment. Fractional b in (1, 8): the first
  round((b - floor(b)) n) codes have ceil(b) bits and the rest floor(b), so
  the rate is b bits per code up to rounding (time-sharing between the two
  neighbouring integer rates, which beats redundancy at the same rate:
  benchmarks/codec_quality.py). Empty segments are dropped. The quantizer
  that makes the codes (`eden.EdenStage`) and `BitpackStage` share this rule.
  """
  if float(bits).is_integer():
    return [(n, int(bits))] if n else []
  low = math.floor(bits)
  high = int(round((bits - low) * n))
  return [(k, b) for k, b in ((high, low + 1), (n - high, low)) if k]


def check_rate(bits, what: str) -> None:
  """CodecError unless `bits` is in PACK_BITS or a fraction in (1, 8)."""
  ok = (not isinstance(bits, bool) and isinstance(bits, (int, float)) and
        (bits in PACK_BITS or (1.0 < bits < 8.0)))
  if not ok:
    raise CodecError(f'{what} bits must be 1..8, 16 or a fractional rate in '
                     f'(1, 8), got {bits!r}')


def _pieces(b: int) -> tuple[int, int, list]:
  """How g codes of b bits tile nb bytes: (g, nb, [(byte, code, shift,
  length, offset)]): bits [shift, shift + length) of code j are bits
  [offset, offset + length) of byte i. Code j holds the group's bits
  [b j, b j + b), byte i its bits [8 i, 8 i + 8): least significant first.
  """
  g = 8 // math.gcd(b, 8)
  nb = g * b // 8
  pieces = []
  for i in range(nb):
    for j in range(g):
      lo, hi = max(b * j, 8 * i), min(b * j + b, 8 * i + 8)
      if lo < hi:
        pieces.append((i, j, lo - b * j, hi - lo, lo - 8 * i))
  return g, nb, pieces


def _field(t: tf.Tensor, shift: int, length: int, width: int) -> tf.Tensor:
  """Bits [shift, shift + length) of non-negative t < 2^width, as a value."""
  if shift:
    t = tf.bitwise.right_shift(t, shift)
  if shift + length < width:
    t = tf.math.floormod(t, 1 << length)
  return t


def _pack(codes: tf.Tensor, b: int) -> tf.Tensor:
  """int32 codes < 2^b -> int32 bytes, ceil(k b / 8) of them, LSB first.

  Codes go in groups of g = 8 / gcd(b, 8) (g b / 8 whole bytes); each byte
  is a sum of shifted bit fields of the group's column slices. Left shifts
  are multiplications and masks floor-mods (TFLite has RIGHT_SHIFT but no
  LEFT_SHIFT or BITWISE_AND builtin). Column slices of a [k / g, g] view
  beat a reduction over its short last axis 3-7x (TF's reduce kernels are
  slow on an axis of 2-8 elements).
  """
  k = codes.shape[0]
  g, nb, pieces = _pieces(b)
  m = tf.reshape(tf.pad(codes, [[0, -k % g]]), [-1, g])
  columns = [m[:, j] for j in range(g)]
  out = []
  for i in range(nb):
    terms = [_field(columns[j], shift, length, b) * (1 << offset)
             for byte, j, shift, length, offset in pieces if byte == i]
    out.append(terms[0] if len(terms) == 1 else tf.add_n(terms))
  packed = out[0] if nb == 1 else tf.reshape(tf.stack(out, 1), [-1])
  return packed[:-(-k * b // 8)] if (k * b) % (8 * nb) else packed


def _unpack(data: tf.Tensor, n: int, b: int) -> tf.Tensor:
  """Inverse of `_pack`: int32 bytes -> the first n int32 codes.

  For b dividing 8 every byte holds 8 / b whole codes: one gather of a
  [256, 8 / b] table (2-4x faster than shifting each byte 8 / b times).
  """
  if 8 % b == 0:
    per = 8 // b
    table = [[(v >> (b * j)) % (1 << b) for j in range(per)]
             for v in range(256)]
    codes = tf.reshape(tf.gather(tf.constant(table, tf.int32), data), [-1])
    return codes[:n] if codes.shape[0] != n else codes
  g, nb, pieces = _pieces(b)
  m = tf.reshape(tf.pad(data, [[0, -data.shape[0] % nb]]), [-1, nb])
  columns = [m[:, i] for i in range(nb)]
  out = []
  for j in range(g):
    terms = [_field(columns[i], offset, length, 8) * (1 << shift)
             for i, code, shift, length, offset in pieces if code == j]
    out.append(terms[0] if len(terms) == 1 else tf.add_n(terms))
  codes = tf.reshape(tf.stack(out, 1), [-1])
  return codes[:n] if codes.shape[0] != n else codes


class BitpackStage(Stage):
  """Packs integer codes of `bits` bits densely into uint8 bytes.

  k codes take ceil(k * bits / 8) bytes, least significant bits first
  (`_pack`, `_unpack`). A fractional rate packs each segment of
  `rate_segments` at its own width, one after the other (each segment starts
  on a byte).
  """

  name = 'bitpack'
  unbiased = True  # lossless
  homogeneous = True  # no float entries
  commutes_with_sum = False

  def __init__(self, bits: float):
    check_rate(bits, 'bitpack')
    self.bits = bits

  def output_length(self, n: int) -> int:
    return sum(-(-k * b // 8) for k, b in rate_segments(n, self.bits))

  def values_dtype(self):
    return tf.uint8

  def encode(self, codes, seed):
    del seed
    codes = tf.cast(codes, tf.int32)
    segments = rate_segments(codes.shape[0], self.bits)
    if len(segments) == 1:
      packed = _pack(codes, segments[0][1])
    else:
      parts, start = [], 0
      for k, b in segments:
        parts.append(_pack(codes[start:start + k], b))
        start += k
      packed = tf.concat(parts, 0)
    return collections.OrderedDict(values=tf.cast(packed, tf.uint8))

  def decode(self, encoded, n, seed):
    del seed
    data = tf.cast(encoded['values'], tf.int32)
    segments = rate_segments(n, self.bits)
    if len(segments) == 1:
      return _unpack(data, n, segments[0][1])
    parts, start = [], 0
    for k, b in segments:
      size = -(-k * b // 8)
      parts.append(_unpack(data[start:start + size], k, b))
      start += size
    return tf.concat(parts, 0)
