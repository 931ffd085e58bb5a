"""Counter-based integer-hash PRNG, identical on the server and on a phone.

Every random choice of the codecs (rotation signs, subsampled positions,
stochastic-rounding noise) and the per-client uplink seed come from here.
TensorFlow's stateless random ops (Philox) and `tf.fingerprint` have no
TFLite builtin kernel, so a phone running a builtin-only TFLite graph could
not reproduce them; these functions use only ops that convert to TFLite
builtins (int32 ADD/MUL/XOR/RIGHT_SHIFT/FLOOR_MOD, int64 CAST/SUM, BITCAST,
CONCATENATION, RESHAPE, STRIDED_SLICE) and give bit-identical results in
TensorFlow and in TFLite (tested in `tests/tff_compress/encoders/prng_test.py`
and, in a TensorFlow-free runtime, `tests/mobile_export/`).

The hash is Chris Wellons' `lowbias32` integer finalizer (xorshift-multiply)
on 32-bit words held in int32 tensors: multiplications wrap modulo 2^32
(TensorFlow and TFLite both compute the two's-complement product) and
logical right shifts are an arithmetic shift followed by a floor-mod.
Stream `i` of a seed is

    h(i) = mix32(a * i + b  mod 2^32),   a odd, (a, b) = keys(seed),

a bijection of i (an odd multiplier, an offset and a bijective finalizer),
so the n hashes of one seed are distinct 32-bit values.

Seeds keep the API of the stateless ops: int64 tensors of shape [2]; all 128
bits enter the keys.
"""

from __future__ import annotations

from typing import Sequence, Union

import tensorflow as tf

_M1 = 0x7FEB352D
_M2 = 0x846CA68B - (1 << 32)      # the same 32-bit pattern, as int32
_GOLDEN = 0x9E3779B9 - (1 << 32)  # 2^32 / golden ratio
_KEY_A, _KEY_B = 0x3C6EF372, 0x1B873593
_FOLD_0, _FOLD_1 = 0x243F6A88, 0x085A308D
_UPDATE = 0x13198A2E

IntLike = Union[int, tf.Tensor]


def _lsr(h: tf.Tensor, k: int) -> tf.Tensor:
  """Logical right shift of 32-bit patterns held in int32."""
  return tf.math.floormod(tf.bitwise.right_shift(h, k), 1 << (32 - k))


def mix32(h: tf.Tensor) -> tf.Tensor:
  """lowbias32: a bijection of 32-bit words (int32 in, int32 out)."""
  h = tf.bitwise.bitwise_xor(h, _lsr(h, 16))
  h = h * tf.constant(_M1, tf.int32)
  h = tf.bitwise.bitwise_xor(h, _lsr(h, 15))
  h = h * tf.constant(_M2, tf.int32)
  return tf.bitwise.bitwise_xor(h, _lsr(h, 16))


def _words(seed: tf.Tensor) -> list[tf.Tensor]:
  """The four 32-bit words of an int64 [2] seed (little-endian order)."""
  w = tf.reshape(tf.bitcast(tf.cast(seed, tf.int64), tf.int32), [4])
  return [w[i] for i in range(4)]


def _absorb(words: Sequence[tf.Tensor], init) -> tf.Tensor:
  """A 32-bit digest of `words` (sponge-like: xor in, add, mix).

  `init` is one int (a scalar digest) or a list of ints: independent
  digests of the same words computed as lanes of one vector, which halves
  the ops a graph holds for the two digests of `keys` and `fold_in` (every
  random draw makes both; trace time is proportional to the op count).
  """
  h = tf.constant(init, tf.int32)
  for w in words:
    h = mix32(tf.bitwise.bitwise_xor(h, tf.cast(w, tf.int32)) +
              tf.constant(_GOLDEN, tf.int32))
  return h


def keys(seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """(a, b): odd multiplier and offset of the seed's counter stream."""
  digests = _absorb(_words(seed), [_KEY_A, _KEY_B])
  return digests[0] * 2 + 1, digests[1]


def _counters(n: int, a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
  """(a i + b) mod 2^32 for i = 0 .. n-1, as int32 (static shape [n]).

  i = c r + j is split into rows r and columns j < c = 1024, so only two
  small ranges are constants: a `tf.range(n)` would be folded into a .tflite
  file as 4 n bytes (and a RANGE over runtime bounds gives a dynamic shape,
  which TFLite's reduce kernels mishandle).
  """
  c = min(n, 1024)
  rows = -(-n // c)
  hi = tf.range(rows, dtype=tf.int32) * (a * c)
  lo = tf.range(c, dtype=tf.int32) * a + b
  out = tf.reshape(hi[:, None] + lo[None, :], [rows * c])
  return out if rows * c == n else out[:n]


def hashes(n: int, seed: tf.Tensor) -> tf.Tensor:
  """n distinct pseudo-random 32-bit words (int32 [n]) for `seed`."""
  a, b = keys(seed)
  return mix32(_counters(n, a, b))


def uniform(n: int, seed: tf.Tensor) -> tf.Tensor:
  """n float32 uniforms on the grid (v + 1/2) / 2^16, v = 0 .. 2^16 - 1.

  Each 32-bit hash yields two 16-bit values (high and low halves; about
  half the work of one hash per value). Against a continuous uniform,
  P(u < t) is off by at most 2^-17 for any t in [0, 1]: stochastic rounding
  with these uniforms is unbiased to within 2^-17 of one quantization step.
  """
  h = hashes((n + 1) // 2, seed)
  v = tf.concat([_lsr(h, 16), tf.math.floormod(h, 1 << 16)], 0)[:n]
  return (tf.cast(v, tf.float32) + 0.5) * (1.0 / (1 << 16))


def signs(n: int, seed: tf.Tensor) -> tf.Tensor:
  """n i.i.d. Rademacher signs (float32 +-1): 32 signs per hash word."""
  h = hashes((n + 31) // 32, seed)
  bits = tf.math.floormod(
      tf.bitwise.right_shift(h[:, None], tf.range(32, dtype=tf.int32)), 2)
  return tf.reshape(1.0 - 2.0 * tf.cast(bits, tf.float32), [-1])[:n]


# Bit j of a word times 2^(31 - j) (wrapping) lands on bit 31, the sign bit.
_TO_SIGN_BIT = [((1 << (31 - j)) + (1 << 31)) % (1 << 32) - (1 << 31)
                for j in range(32)]


def flip_signs(x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """x * signs(size(x), seed), bit for bit, by XOR-ing the float sign bits.

  Sign j of hash word w is bit j of w (as in `signs`); moving it to bit 31
  (a wrapping multiplication by 2^(31 - j)), smearing bit 31 (arithmetic
  shift by 31: 0 or -1) and multiplying by -2^31 gives 0 or 0x80000000,
  which is XOR-ed into x's bits. Three integer ops per value instead of
  building a float +-1 vector (shift, floor-mod, cast, 1 - 2 s) and
  multiplying: 35 % less time on 1.6 M values (benchmarks/codec_speed.py).

  Args:
    x: float32 tensor of any static shape.
    seed: int64 [2].

  Returns:
    float32, the shape of x.
  """
  n = x.shape.num_elements()
  h = hashes((n + 31) // 32, seed)
  top = h[:, None] * tf.constant(_TO_SIGN_BIT, tf.int32)
  mask = tf.bitwise.right_shift(top, 31) * tf.constant(-(1 << 31), tf.int32)
  mask = tf.reshape(mask, [-1])[:n]
  bits = tf.bitwise.bitwise_xor(tf.bitcast(tf.reshape(x, [-1]), tf.int32),
                                mask)
  return tf.reshape(tf.bitcast(bits, tf.float32), x.shape)


def fold_in(seed: tf.Tensor, data: IntLike) -> tf.Tensor:
  """A new int64 [2] seed from `seed` and a 32-bit integer `data`."""
  words = _words(seed) + [tf.cast(data, tf.int32)]
  return tf.cast(_absorb(words, [_FOLD_0, _FOLD_1]), tf.int64)


def fingerprint(tensors: Sequence[tf.Tensor], seed: tf.Tensor) -> tf.Tensor:
  """int32 digest of the exact float32 bits of `tensors` (order-sensitive).

  sum_i mix32(bits_i + a i + b) per tensor, (a, b) = keys(seed), summed in
  int64 and wrapped to 32 bits, the tensors' digests chained through
  `_absorb`. Replaces `tf.fingerprint` (no TFLite kernel).
  """
  a, b = keys(seed)
  digests = []
  for t in tensors:
    bits = tf.bitcast(tf.reshape(tf.cast(t, tf.float32), [-1]), tf.int32)
    h = mix32(bits + _counters(bits.shape[0], a, b))
    digests.append(tf.cast(tf.reduce_sum(tf.cast(h, tf.int64)), tf.int32))
  return _absorb(digests, _UPDATE)


def update_seed(values: Sequence[tf.Tensor], base_seed: IntLike,
                round_num: IntLike) -> tf.Tensor:
  """The uplink seed of one client: [digest(base seed, update), round].

  Clients need independent quantization noise but carry no identity, so
  the seed is a function of the client's own update (see
  `tff_compress.learning.encoded`); a phone computes the same value in its
  TFLite graph.
  """
  seed = tf.stack([tf.cast(base_seed, tf.int64),
                   tf.cast(round_num, tf.int64)])
  digest = _absorb([fingerprint(values, seed)] + _words(seed), _UPDATE)
  return tf.stack([tf.cast(digest, tf.int64), seed[1]])
