"""Forward and explicit backward passes that convert to TFLite builtins only.

TensorFlow's own gradients of these layers are TF ops without a TFLite
builtin kernel (ReluGrad, Conv2DBackpropFilter, MaxPoolGrad,
SparseSoftmaxCrossEntropyWithLogits, BiasAddGrad), so a trainer built with
`tf.GradientTape` needs the Flex delegate. Here every layer writes its
backward pass with builtin ops instead. Notation: x the layer input, W the
kernel, z = conv(x, W) + b (or x W + b), a the activation, dy = dL/da.

| layer | forward | backward (builtin ops) |
|---|---|---|
| Dense | a = relu(x W + b) | dz = dy * sign(a); dW = x^T dz, db = sum(dz), dx = dz W^T |
| Conv2D | z = conv(x, W) + b: one matrix product on patches | dW = P^T dz, P the channel-major patch matrix; dx = conv(pad(dz), flip(W)^T) (a 'full' convolution, the forward's own path); db = sum(dz) |
| Conv2D + MaxPool p x p (fused) | a = relu(maxpool(z)) | dm = dy * sign(a); dz = dm routed to the first maximum of each window; then as Conv2D |
| MaxPool p x p, stride p | MAX_POOL_2D | routed to the first maximum (EQUAL chain, as TF's MaxPoolGrad) |
| Rescaling (dropout's scaler) | MUL | MUL |
| Flatten | RESHAPE | RESHAPE |
| softmax cross-entropy | LOG_SOFTMAX, ONE_HOT | (softmax - one_hot) / rows |

Why these op forms (each measured per layer in tf.lite, tflite-runtime and
ai-edge-litert, `//mobile_export:op_benchmark`, docs/BENCHMARKS.md):

* Matrix products are rank-2 BATCH_MATMULs whose large operands are not
  transposed: BATCH_MATMUL is the one product that is fast in all three
  runtimes (FULLY_CONNECTED with non-constant weights runs 3-4x slower in
  tflite-runtime and ai-edge-litert), a transposed operand costs TFLite a
  full transposed copy, and a rank-4 left operand (which the converter
  makes by folding a reshape into the product) runs one small product per
  image row, 2-3x slower. So the weight gradient of a convolution takes
  its patch matrix in channel-major layout, P^T [kh*kw*cin, rows], sliced
  from a channel-major copy of the (small) input, rather than transposing
  the [rows, kh*kw*cin] matrix. The transposed operands left are small:
  a narrow first layer's P^T in its forward product, the dense layers'
  inputs [batch, in] in dW; dy W^T is a FULLY_CONNECTED, which takes W
  ([in, out]) as it is.
* A wide convolution (kw * channels >= `SEPARABLE_MIN_DEPTH`, e.g. the
  Caldas CNN's conv2) runs row-separably: the patches span only the kw
  columns (kw slices instead of kh*kw, of the input padded in width only),
  one product with the kernel rows stacked on the output side gives every
  kernel row's contribution at every input row, and kh row-shifted slices
  of that are added, the shifts supplying the vertical zero padding. The
  product has the im2col product's size; the copies are kh times smaller.
  The input gradient is the same computation on the output gradient with
  the flipped, transposed kernel (a 'full' correlation; not TRANSPOSE_CONV,
  which needs a static output shape and took 1.6-1.8x as long in the
  TF-free runtimes), and the weight gradient one product of the
  row-shifted output gradient (channel-major) with the forward's column
  patches. Strides
  dilate the output gradient first (s^2 more products; no registered model
  strides).
* ReLU's mask is a MUL by SIGN(a) (a >= 0, so the sign is 0 or 1), not
  SELECT_V2 against a broadcast zero, which tf.lite and tflite-runtime run
  in a generic broadcast loop (20-35x slower on conv1's output); the
  pooling gradient is an EQUAL/MUL chain, not ARG_MAX + ONE_HOT (5-8x
  slower).
* A Conv2D with ReLU (and dropout's positive rescaling) followed by max-
  pooling pools before the activation: relu(max(z)) * s = max(relu(z) * s)
  exactly (both monotone, and rounding is monotone), so the forward values
  are TF's, and the ReLU mask, its bias gradient and the scaling work on
  the pooled tensor (p^2 times smaller). The pooling gradient goes to the
  first maximum of z in each window, as TF's MaxPoolGrad routes it to the
  first maximum of relu(z) * s; the two differ only where ReLU ties the
  window (then the mask zeroes the gradient anyway) or where rounding the
  scale ties two different values.
* The input gradient of the first weighted layer is not computed.

Every shape but the batch is static; the batch is whatever `x` has, so
`train` and `infer` take any number of rows (reshapes use -1, slices keep
the whole batch axis).

Layers are read from a Keras model (`network_from_keras`), so the trainer
uses the run's exact model definition and weight order; a layer outside
this table raises `UnsupportedLayerError`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import tensorflow as tf

# kw * channels from which a convolution runs row-separably (see the module
# docstring): below it the narrow product of the separable form (K =
# kw * cin, e.g. 5 for a 5x5 convolution of a grey image) is slower than
# copying kh * kw slices.
SEPARABLE_MIN_DEPTH = 32


class UnsupportedLayerError(ValueError):
  """A Keras layer (or setting) without a builtin-op backward pass here."""


def _relu_mask(dy, a):
  """dy where the ReLU output a is positive, else 0 (a >= 0)."""
  return dy * tf.sign(a)


def _pad_hw(x, rows: tuple[int, int], cols: tuple[int, int]):
  if not any(rows + cols):
    return x
  return tf.pad(x, [[0, 0], list(rows), list(cols), [0, 0]])


def _patches_t(xp, kh: int, kw: int, strides: tuple[int, int], ho: int,
               wo: int):
  """Channel-major im2col of a padded input: [kh*kw*c, B*ho*wo].

  Row (i, j, c) (the order of a [kh, kw, c, cout] kernel reshaped to
  [kh*kw*c, cout]), column (n, r, s) holds xp[n, r*sh + i, s*sw + j, c].
  The input is transposed to [c, B, hp, wp] first (one copy of the input,
  kh*kw times smaller than the patches), so each tap's slice is a block of
  image rows and the concatenation copies whole blocks.
  """
  sh, sw = strides
  xt = tf.transpose(xp, [3, 0, 1, 2])
  taps = [xt[:, :, i:i + (ho - 1) * sh + 1:sh, j:j + (wo - 1) * sw + 1:sw]
          for i in range(kh) for j in range(kw)]
  p = tf.concat(taps, 0) if len(taps) > 1 else taps[0]
  return tf.reshape(p, [kh * kw * xp.shape[3], -1])


def _separable(kernel_shape, strides) -> bool:
  """Whether a correlation with this kernel runs row-separably."""
  _, kw, cin, _ = kernel_shape
  return tuple(strides) == (1, 1) and kw * cin >= SEPARABLE_MIN_DEPTH


def _column_patches(xq, kw: int, wo: int):
  """Width-only im2col: q[(n, r, j), (b, c)] = xq[n, r, j + b, c].

  Shape [B*h*wo, kw*c].
  Each slice is flattened before the concatenation: a rank-4
  concatenation followed by a reshape lets the converter fold the reshape
  into a rank-4 BATCH_MATMUL (one small product per image row).
  """
  c = xq.shape[3]
  cols = [tf.reshape(xq[:, :, j:j + wo, :], [-1, c]) for j in range(kw)]
  return tf.concat(cols, 1) if kw > 1 else cols[0]


def _row_shift(t, shift: int, rows_out: int):
  """u[:, i] = t[:, i + shift], i in [0, rows_out); zero where t has no row."""
  rows_in = t.shape[1]
  lo, hi = max(0, -shift), min(rows_out, rows_in - shift)
  if (lo, hi, shift, rows_in) == (0, rows_out, 0, rows_out):
    return t
  piece = t[:, lo + shift:hi + shift]
  return _pad_hw(piece, (lo, rows_out - hi), (0, 0))


def _correlate_rows(q, kernel, rows_in: int, top: int, rows_out: int,
                    wo: int):
  """Row-separable stride-1 correlation: [B*rows_out*wo, cout].

  q = `_column_patches` of the input padded in width only (rows_in rows).
  t = q W_rows, W_rows[(b, c), (a, o)] = W[a, b, c, o]: one product,
  [B*rows_in*wo, kw*c] x [kw*c, kh*cout], giving every kernel row's
  contribution at every input row; then out[n, i, j, o] = sum_a
  t[n, i + a - top, j, (a, o)], the rows above and below the input (its
  `top` and bottom zero padding) contributing nothing. Padding the
  product's output rather than its input keeps zero rows out of the
  product.
  """
  kh, kw, cin, cout = kernel.shape
  w_rows = tf.reshape(tf.transpose(kernel, [1, 2, 0, 3]),
                      [kw * cin, kh * cout])
  t = tf.reshape(tf.matmul(q, w_rows), [-1, rows_in, wo, kh * cout])
  out = None
  for a in range(kh):
    part = _row_shift(t[:, :, :, a * cout:(a + 1) * cout], a - top, rows_out)
    out = part if out is None else out + part
  return tf.reshape(out, [-1, cout])


def _correlate(x, kernel, strides, rows: tuple[int, int],
               cols: tuple[int, int], ho: int, wo: int):
  """VALID correlation of x zero-padded by rows/cols.

  Returns ([B*ho*wo, cout], patches); patches is what the weight gradient
  reuses: the column patches q of the row-separable form (built from x
  padded in width only), or P^T (`_patches_t`) of the standard one.
  """
  kh, kw, cin, cout = kernel.shape
  if _separable(kernel.shape, strides):
    q = _column_patches(_pad_hw(x, (0, 0), cols), kw, wo)
    return _correlate_rows(q, kernel, x.shape[1], rows[0], ho, wo), q
  pt = _patches_t(_pad_hw(x, rows, cols), kh, kw, strides, ho, wo)
  return tf.matmul(tf.transpose(pt),
                   tf.reshape(kernel, [kh * kw * cin, cout])), pt


def _kernel_grad_rows(q, dz, kernel_shape, rows_in: int, top: int):
  """dW of a row-separable convolution from its column patches q.

  dW[a, b, c, o] = sum_{n, r, j} q[(n, r, j), (b, c)] dz[n, r + top - a, j,
  o], r over the rows_in input rows (dz zero outside its rows): the row
  shifts go to dz, the smaller operand, laid out channel-major, [(a, o),
  (n, r, j)], so the product [kh*cout, B*rows_in*wo] x [B*rows_in*wo,
  kw*cin] takes both operands untransposed.
  """
  kh, kw, cin, cout = kernel_shape
  ho = dz.shape[1]
  # Zero rows enough for every shift, added before the transpose (padding
  # the middle axis of the transposed tensor measured 2x slower).
  pad_top, pad_bottom = max(0, kh - 1 - top), max(0, rows_in + top - ho)
  dzt = tf.transpose(_pad_hw(dz, (pad_top, pad_bottom), (0, 0)), [3, 0, 1, 2])
  starts = [top - a + pad_top for a in range(kh)]
  shifted = [dzt[:, :, i:i + rows_in, :] for i in starts]
  d = tf.reshape(tf.concat(shifted, 0) if kh > 1 else shifted[0],
                 [kh * cout, -1])
  g = tf.reshape(tf.matmul(d, q), [kh, cout, kw, cin])
  return tf.transpose(g, [0, 2, 3, 1])


def _dilate(dz, sh: int, sw: int):
  """Inserts s - 1 zeros between rows/columns: [B, (h-1)sh+1, (w-1)sw+1, c]."""
  _, h, w, c = dz.shape
  if sw > 1:
    dz = tf.reshape(tf.pad(tf.reshape(dz, [-1, w, 1, c]),
                           [[0, 0], [0, 0], [0, sw - 1], [0, 0]]),
                    [-1, h, w * sw, c])[:, :, :(w - 1) * sw + 1, :]
  w = dz.shape[2]
  if sh > 1:
    dz = tf.reshape(tf.pad(tf.reshape(dz, [-1, 1, w * c]),
                           [[0, 0], [0, sh - 1], [0, 0]]),
                    [-1, h * sh, w, c])[:, :(h - 1) * sh + 1, :, :]
  return dz


def _route_to_first_max(y, m, dm, p: int):
  """MaxPool's input gradient: dm to the first maximum of each p x p window.

  y [B, ho*p, wo*p, c] (cropped to whole windows), m = maxpool(y), dm =
  dL/dm. Window cell k = (di, dj) in row-major order, as TF's MaxPoolGrad
  scans it: cell k takes what earlier cells left if it equals the window's
  maximum (hit in {0, 1}, so rest * hit and rest - rest * hit are exact);
  the last cell takes the rest.
  """
  c = y.shape[3]
  cells = tf.nn.space_to_depth(y, p)
  rest, parts = dm, []
  for k in range(p * p - 1):
    hit = tf.cast(tf.equal(cells[:, :, :, k * c:(k + 1) * c], m), dm.dtype)
    part = rest * hit
    parts.append(part)
    rest -= part
  parts.append(rest)
  return tf.nn.depth_to_space(tf.concat(parts, 3), p)


@dataclasses.dataclass(frozen=True)
class Conv2D:
  """Conv2D + bias + optional ReLU (Keras `Conv2D`, NHWC).

  With `pool` > 0 it also holds the max-pooling that follows it in the
  model (and `scale`, dropout's rescaling between them), fused as the
  module docstring describes.
  """

  name: str
  kernel_size: tuple[int, int]
  strides: tuple[int, int]
  padding: str  # 'same' | 'valid'
  relu: bool
  use_bias: bool
  pool: int = 0  # fused p x p max-pooling after the activation; 0 = none
  scale: float = 1.0  # fused rescaling (> 0) between activation and pooling

  @property
  def num_weights(self) -> int:
    return 2 if self.use_bias else 1

  def _pads(self, h: int, w: int) -> tuple[tuple[int, int], tuple[int, int]]:
    if self.padding == 'valid':
      return (0, 0), (0, 0)
    out = []
    for size, k, s in zip((h, w), self.kernel_size, self.strides):
      total = max((math.ceil(size / s) - 1) * s + k - size, 0)
      out.append((total // 2, total - total // 2))
    return out[0], out[1]

  def _out_hw(self, x_shape, kh: int, kw: int) -> tuple[int, int]:
    (pt, pb), (pl, pr) = self._pads(x_shape[1], x_shape[2])
    return ((x_shape[1] + pt + pb - kh) // self.strides[0] + 1,
            (x_shape[2] + pl + pr - kw) // self.strides[1] + 1)

  def forward(self, x, weights):
    rows, cols = self._pads(x.shape[1], x.shape[2])
    kernel = weights[0]
    kh, kw, _, cout = kernel.shape
    ho, wo = self._out_hw(x.shape, kh, kw)
    z, patches = _correlate(x, kernel, self.strides, rows, cols, ho, wo)
    if self.use_bias:
      z += weights[1]
    y = tf.reshape(z, [-1, ho, wo, cout])
    m = None
    if self.pool:
      p = self.pool
      if ho % p or wo % p:
        y = y[:, :ho // p * p, :wo // p * p, :]
      m = tf.nn.max_pool2d(y, p, p, 'VALID')
      a = tf.nn.relu(m) if self.relu else m
    else:
      a = tf.nn.relu(y) if self.relu else y
    if self.scale != 1.0:
      a *= self.scale
    return a, (x.shape, patches, y, m, a)

  def backward(self, dy, cache, weights, need_dx: bool = True):
    x_shape, patches, y, m, a = cache
    kernel = weights[0]
    kh, kw, _, cout = kernel.shape
    d = dy * self.scale if self.scale != 1.0 else dy
    if self.relu:
      d = _relu_mask(d, a)
    grads = []
    if self.pool:
      dz = _route_to_first_max(y, m, d, self.pool)
      ho, wo = self._out_hw(x_shape, kh, kw)
      dz = _pad_hw(dz, (0, ho - dz.shape[1]), (0, wo - dz.shape[2]))
    else:
      dz = d
    if _separable(kernel.shape, self.strides):
      top = self._pads(x_shape[1], x_shape[2])[0][0]
      grads.append(_kernel_grad_rows(patches, dz, kernel.shape, x_shape[1],
                                     top))
    else:
      grads.append(tf.reshape(
          tf.matmul(patches, tf.reshape(dz, [-1, cout])), kernel.shape))
    if self.use_bias:
      # The routing moves dm without changing its per-channel sum.
      grads.append(tf.reduce_sum(tf.reshape(d, [-1, cout]), 0))
    if not need_dx:
      return None, grads
    return self._input_grad(dz, kernel, x_shape), grads

  def _input_grad(self, dz, kernel, x_shape):
    """dL/dx: the 'full' correlation of dz with the flipped, transposed kernel.

    dx[n, r, s, c] = sum_{a, b, o} dzq[n, r + a, s + b, o] *
    W[kh-1-a, kw-1-b, c, o], dzq being dz (dilated by the strides) padded
    with kh-1-pt rows on top and enough below to give x's rows (likewise
    for columns): dx of x itself, not of its padded copy.
    """
    kh, kw, _, _ = kernel.shape
    (pt, _), (pl, _) = self._pads(x_shape[1], x_shape[2])
    if self.strides != (1, 1):
      dz = _dilate(dz, *self.strides)
    h, w = x_shape[1], x_shape[2]
    flipped = tf.transpose(kernel[::-1, ::-1], [0, 1, 3, 2])
    rows = (kh - 1 - pt, h + pt - dz.shape[1])
    cols = (kw - 1 - pl, w + pl - dz.shape[2])
    dx, _ = _correlate(dz, flipped, (1, 1), rows, cols, h, w)
    return tf.reshape(dx, [-1, h, w, x_shape[3]])


@dataclasses.dataclass(frozen=True)
class Dense:
  """x W + b + optional ReLU (Keras `Dense` on rank-2 input)."""

  name: str
  relu: bool
  use_bias: bool

  @property
  def num_weights(self) -> int:
    return 2 if self.use_bias else 1

  def forward(self, x, weights):
    y = tf.matmul(x, weights[0])
    if self.use_bias:
      y += weights[1]
    a = tf.nn.relu(y) if self.relu else y
    return a, (x, a)

  def backward(self, dy, cache, weights, need_dx: bool = True):
    x, a = cache
    if self.relu:
      dy = _relu_mask(dy, a)
    grads = [tf.matmul(x, dy, transpose_a=True)]
    if self.use_bias:
      grads.append(tf.reduce_sum(dy, 0))
    if not need_dx:
      return None, grads
    # dy W^T: FULLY_CONNECTED takes W ([in, out]) as its weights untransposed.
    return tf.matmul(dy, weights[0], transpose_b=True), grads


@dataclasses.dataclass(frozen=True)
class MaxPool:
  """Non-overlapping p x p max-pooling with stride p ('valid')."""

  name: str
  pool: int

  num_weights = 0

  def forward(self, x, weights):
    del weights
    p = self.pool
    h, w = x.shape[1] // p * p, x.shape[2] // p * p
    cropped = x[:, :h, :w, :] if (h, w) != tuple(x.shape[1:3]) else x
    m = tf.nn.max_pool2d(cropped, p, p, 'VALID')
    return m, (x.shape, cropped, m)

  def backward(self, dy, cache, weights, need_dx: bool = True):
    del weights, need_dx
    x_shape, cropped, m = cache
    dx = _route_to_first_max(cropped, m, dy, self.pool)
    return _pad_hw(dx, (0, x_shape[1] - dx.shape[1]),
                   (0, x_shape[2] - dx.shape[2])), []


@dataclasses.dataclass(frozen=True)
class Scale:
  """y = s x (Keras `Rescaling` without offset: Federated Dropout's scaler)."""

  name: str
  scale: float

  num_weights = 0

  def forward(self, x, weights):
    del weights
    return x * self.scale, None

  def backward(self, dy, cache, weights, need_dx: bool = True):
    del cache, weights, need_dx
    return dy * self.scale, []


@dataclasses.dataclass(frozen=True)
class Flatten:
  name: str

  num_weights = 0

  def forward(self, x, weights):
    del weights
    return tf.reshape(x, [-1, math.prod(x.shape[1:])]), x.shape

  def backward(self, dy, cache, weights, need_dx: bool = True):
    del weights, need_dx
    return tf.reshape(dy, [-1] + list(cache[1:])), []


@dataclasses.dataclass(frozen=True)
class Network:
  """A sequential network of supported layers (weights in Keras order)."""

  layers: tuple
  input_shape: tuple[int, ...]
  num_classes: int
  weight_shapes: tuple[tuple[int, ...], ...]
  weight_names: tuple[str, ...]

  def split(self, weights: Sequence) -> list[list]:
    """Per-layer weight lists from the flat list."""
    out, i = [], 0
    for layer in self.layers:
      out.append(list(weights[i:i + layer.num_weights]))
      i += layer.num_weights
    return out

  def logits(self, x, weights):
    for layer, w in zip(self.layers, self.split(weights)):
      x, _ = layer.forward(x, w)
    return x

  def loss_and_grads(self, x, y, weights, grad_scale: Optional[float] = None):
    """Mean cross-entropy over rows with y >= 0, and its weight gradients.

    loss = -(1/m) sum_{rows r with y_r >= 0} log softmax(z_r)[y_r] with m
    the number of such rows (Keras' SparseCategoricalCrossentropy with
    from_logits and mean reduction over a batch of those m rows); rows
    labelled -1 contribute nothing. dL/dz = (softmax(z) - one_hot(y)) *
    valid / m. The batch is x's first dimension, any size.

    Args:
      x: Inputs [B, *input_shape].
      y: int32 labels [B]; -1 marks a row to ignore.
      weights: Flat weight list, Keras order.
      grad_scale: If set, the gradients returned are grad_scale * dL/dW
        (the scale enters once, at dL/dz, so an SGD step saves a
        multiplication over every weight).

    Returns:
      (loss, gradients in weight order).
    """
    per_layer = self.split(weights)
    caches = []
    for layer, w in zip(self.layers, per_layer):
      x, cache = layer.forward(x, w)
      caches.append(cache)
    logp = tf.nn.log_softmax(x)
    valid = tf.cast(y >= 0, tf.float32)
    count = tf.maximum(tf.reduce_sum(valid), 1.0)
    onehot = tf.one_hot(y, self.num_classes, dtype=tf.float32)
    loss = -tf.reduce_sum(onehot * logp) / count
    scale = 1.0 / count if grad_scale is None else grad_scale / count
    d = (tf.exp(logp) * valid[:, None] - onehot) * scale
    # Layers before the first weighted one need no gradient at all, and
    # the first weighted one needs no input gradient.
    first = next(i for i, layer in enumerate(self.layers) if layer.num_weights)
    grads = [[] for _ in self.layers]
    for i in reversed(range(first, len(self.layers))):
      d, grads[i] = self.layers[i].backward(d, caches[i], per_layer[i],
                                            need_dx=i > first)
    return loss, [g for layer_grads in grads for g in layer_grads]


def _relu_or_linear(layer) -> bool:
  act = tf.keras.activations.serialize(layer.activation)
  if isinstance(act, dict):
    act = act.get('config', {}).get('name', act.get('class_name'))
  if act == 'relu':
    return True
  if act == 'linear':
    return False
  raise UnsupportedLayerError(
      f'layer {layer.name!r}: activation {act!r} has no builtin backward '
      'pass here (supported: relu, linear)')


def _fuse_pooling(layers: list) -> list:
  """Merges Conv2D [+ Scale with s > 0] + MaxPool into one fused Conv2D."""
  out, i = [], 0
  while i < len(layers):
    layer, j, scale = layers[i], i + 1, 1.0
    if (isinstance(layer, Conv2D) and j < len(layers) and
        isinstance(layers[j], Scale) and layers[j].scale > 0):
      scale, j = layers[j].scale, j + 1
    if (isinstance(layer, Conv2D) and j < len(layers) and
        isinstance(layers[j], MaxPool)):
      out.append(dataclasses.replace(layer, pool=layers[j].pool, scale=scale))
      i = j + 1
    else:
      out.append(layer)
      i += 1
  return out


def network_from_keras(model: tf.keras.Model) -> Network:
  """The supported-layer description of a built sequential Keras model.

  Raises:
    UnsupportedLayerError: naming the first layer (or setting) that has no
      builtin-op backward pass here.
  """
  layers = []
  for layer in model.layers:
    if isinstance(layer, tf.keras.layers.InputLayer):
      continue
    # Exact types: subclasses (Conv2DTranspose, ...) compute other things.
    if type(layer) is tf.keras.layers.Conv2D:  # pylint: disable=unidiomatic-typecheck
      if layer.data_format != 'channels_last':
        raise UnsupportedLayerError(f'layer {layer.name!r}: channels_first')
      if tuple(layer.dilation_rate) != (1, 1) or layer.groups != 1:
        raise UnsupportedLayerError(
            f'layer {layer.name!r}: dilated or grouped convolution')
      if layer.padding not in ('same', 'valid'):
        raise UnsupportedLayerError(
            f'layer {layer.name!r}: padding {layer.padding!r}')
      layers.append(Conv2D(layer.name, tuple(layer.kernel_size),
                           tuple(layer.strides), layer.padding,
                           _relu_or_linear(layer), layer.use_bias))
    elif type(layer) is tf.keras.layers.Dense:  # pylint: disable=unidiomatic-typecheck
      if len(layer.input.shape) != 2:
        raise UnsupportedLayerError(
            f'layer {layer.name!r}: Dense on rank-{len(layer.input.shape)} '
            'input')
      layers.append(Dense(layer.name, _relu_or_linear(layer),
                          layer.use_bias))
    elif type(layer) is tf.keras.layers.MaxPool2D:  # pylint: disable=unidiomatic-typecheck
      p = layer.pool_size
      if (p[0] != p[1] or tuple(layer.strides) != tuple(p) or
          layer.data_format != 'channels_last'):
        raise UnsupportedLayerError(
            f'layer {layer.name!r}: max-pooling must be square with stride '
            f'= pool size, got pool {p} stride {layer.strides}')
      if layer.padding == 'same' and any(
          d % p[0] for d in layer.input.shape[1:3]):
        raise UnsupportedLayerError(
            f'layer {layer.name!r}: SAME max-pooling of a size that the '
            'pool does not divide')
      layers.append(MaxPool(layer.name, p[0]))
    elif type(layer) is tf.keras.layers.Flatten:  # pylint: disable=unidiomatic-typecheck
      layers.append(Flatten(layer.name))
    elif type(layer) is tf.keras.layers.Rescaling and not layer.offset:  # pylint: disable=unidiomatic-typecheck
      layers.append(Scale(layer.name, float(layer.scale)))
    else:
      raise UnsupportedLayerError(
          f'layer {layer.name!r} ({type(layer).__name__}) has no builtin '
          'backward pass here (supported: Conv2D, Dense, MaxPool2D, '
          'Flatten, Rescaling without offset; relu/linear activations)')
  if model.non_trainable_weights:
    raise UnsupportedLayerError(
        'non-trainable weights (e.g. batch-norm statistics) are not '
        'supported by the builtin trainer')
  if not layers or not isinstance(layers[-1], Dense) or layers[-1].relu:
    raise UnsupportedLayerError('the last layer must be a linear Dense '
                                '(logits)')
  out_shape = model.output_shape
  return Network(
      layers=tuple(_fuse_pooling(layers)),
      input_shape=tuple(int(d) for d in model.input_shape[1:]),
      num_classes=int(out_shape[-1]),
      weight_shapes=tuple(tuple(int(d) for d in w.shape)
                          for w in model.weights),
      weight_names=tuple(w.name for w in model.weights))
