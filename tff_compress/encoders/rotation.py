"""A random rotation that spreads a whole tensor, at any length, cheaply.

`HadamardStage` rotates 4,096-element chunks in place, so each chunk keeps
its own energy: on a dense-layer update whose rows differ in norm by orders
of magnitude, a quantizer with one scale per tensor wastes its levels on the
quiet chunks (1-bit EDEN on the Caldas CNN's dense1 update: vNMSE 1.06-1.18
and biased after the chunked rotation, 0.571 and unbiased after this one;
benchmarks/codec_quality.py). A single
randomized Hadamard over the zero-padded tensor (EDEN's and tfmot's) spreads
it but pads to the next power of two: +31 % coordinates for the 1,605,632
floats of dense1, +60 % for the 5,120-float logits kernel.

`RotationStage` is a product of `layers` block-diagonal randomized Hadamard
matrices with a fixed perfect shuffle between them:

    R = B_L T ... T B_2 T B_1,   B_i = I_c (x) (H_w D_i),

on x zero-padded to c w coordinates, seen as a [c, w] matrix: D_i is a
diagonal of seeded random signs, H_w the orthonormal w-point Walsh-Hadamard
matrix applied to each row, and T the transpose [c, w] -> [w, c] read back as
[c, w]. w is a power of two with w >= c (w >= sqrt(n)): then T sends every
row's w entries to every one of the c rows, so after two layers every output
coordinate depends on every input and a one-hot input ends with energy
~1/(c w) in every coordinate. Among such w the one with the least padding is
used (ties: the smaller w, fewer FLOPs), so the padding is less than the
smallest admissible w < 2 sqrt(n) -- zero for the Caldas CNN's 800, 5,120,
51,200 and 1,605,632-float kernels. Each layer costs n seeded signs, one
w-point FWHT per row, 2 n (a + b) FLOPs with w = a b (`stages.fwht`), and
one shuffle (a transpose).

Why three layers for unbiased EDEN. EDEN's scale makes the decode unbiased
when R is uniformly (Haar) distributed (DRIVE, Vargaftik et al. 2021,
Thm. 1): x-hat is then equivariant under every rotation fixing x, and its
component along x is exactly x. A structured R is only close to Haar.
1-bit EDEN, 4,000 seeds (`codec_quality --sections=layers`): on a
heavy-tailed 400-float vector one randomized Hadamard layer (as
`HadamardStage`, and EDEN's own code) leaves a relative bias of 0.33 (27x
the noise floor), two layers 0.17 (17x), three 0.012 (1.0x, as a Haar
rotation would); on the CNN's real conv1 update one layer is 24x the floor,
two and three 1.0x. Three layers also turn a one-hot input into Gaussian
coordinates (kurtosis 3, tested). Codecs that are unbiased by themselves
(stochastic rounding) or meant to be biased (minimum-error broadcast) need
two layers, for the spreading (`factory.build_chain`).

Sub-bit settings. With `keep` < 1 only the first k = max(1, round(keep w))
coordinates of every row of the last layer are sent (EDEN's "rotation +
random subset"). No positions are drawn: the rotation's random signs make
the kept set random. For that fixed projection P, averaging over D_1 leaves
only the diagonal of R^T P R, and averaging over D_L makes each diagonal
entry k / w (every entry of H_w has magnitude 1/sqrt(w)), so
E[R^T P R] = (k / w) I exactly. Hence
the decode multiplied by w / k (`unbiased`) is unbiased with E||x-hat - x||^2
= (w / k - 1) ||x||^2, the same as a uniformly random subset; without the
factor it is the orthogonal projection, E||x-hat - x||^2 = (1 - k / w)
||x||^2, the minimum-error choice for a single receiver. Encoding is a slice
and decoding a zero pad: free, and the same in TensorFlow and TFLite.
"""

from __future__ import annotations

import collections

import tensorflow as tf

from tff_compress.encoders import prng
from tff_compress.encoders import stages


def geometry(n: int) -> tuple[int, int]:
  """(c, w): rows and power-of-two row width of the padded [c, w] layout.

  w >= c (every row reaches every row through the shuffle) with the least
  padding c w - n; ties go to the smaller w.
  """
  if n < 1:
    raise stages.CodecError(f'rotation needs at least 1 element, got {n}')
  w = 1
  while w * w < n:
    w *= 2
  best = None
  top = stages.next_pow2(n)
  while True:
    c = -(-n // w)
    if best is None or c * w - n < best[0]:
      best = (c * w - n, c, w)
    if w >= top:
      break
    w *= 2
  return best[1], best[2]


class RotationStage(stages.Stage):
  """Whole-tensor structured random rotation (see the module docstring).

  Args:
    layers: Randomized Hadamard layers L >= 2 (3 make EDEN's scale
      unbiased to within the noise of 4,000 seeds; 2 spread as well).
    keep: Fraction of the rotated coordinates sent, in (0, 1] (sub-bit).
    unbiased: With keep < 1, scale the decode by w / k (unbiased) or not
      (orthogonal projection: minimum error, biased).

  Raises:
    CodecError: a bad argument.
  """

  name = 'rotation'
  commutes_with_sum = True  # linear for a fixed seed
  homogeneous = True

  def __init__(self, layers: int = 3, keep: float = 1.0,
               unbiased: bool = True):
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 2:
      raise stages.CodecError(
          f'rotation layers must be an integer >= 2, got {layers!r}')
    if not 0.0 < keep <= 1.0:
      raise stages.CodecError(
          f'rotation keep fraction must be in (0, 1], got {keep!r}')
    self.layers = layers
    self.keep = keep
    self.haar_like = layers >= 3
    self.unbiased = bool(unbiased or keep == 1.0)
    self._rescale = unbiased and keep < 1.0

  def _kept(self, w: int) -> int:
    return max(1, min(w, int(round(self.keep * w))))

  def output_length(self, n: int) -> int:
    c, w = geometry(n)
    return c * self._kept(w)

  def encode(self, x, seed):
    n = x.shape[0]
    c, w = geometry(n)
    v = tf.reshape(tf.pad(x, [[0, c * w - n]]), [c, w])
    for i in range(self.layers):
      if i:
        v = tf.reshape(tf.transpose(v), [c, w])
      v = stages.fwht(prng.flip_signs(v, prng.fold_in(seed, i)))
    k = self._kept(w)
    if k < w:
      v = v[:, :k]
    return collections.OrderedDict(values=tf.reshape(v, [-1]))

  def decode(self, encoded, n, seed):
    c, w = geometry(n)
    k = self._kept(w)
    v = tf.reshape(encoded['values'], [c, k])
    if k < w:
      v = tf.pad(v, [[0, 0], [0, w - k]])
      if self._rescale:
        v = v * (w / k)
    for i in reversed(range(self.layers)):
      v = prng.flip_signs(stages.fwht(v), prng.fold_in(seed, i))
      if i:
        v = tf.reshape(tf.transpose(tf.reshape(v, [w, c])), [c, w])
    return tf.reshape(v, [-1])[:n]
