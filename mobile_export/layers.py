"""Forward and explicit backward passes that convert to TFLite builtins only.

TensorFlow's own gradients of these layers are TF ops without a TFLite
builtin kernel (ReluGrad, Conv2DBackpropFilter, MaxPoolGrad,
SparseSoftmaxCrossEntropyWithLogits, BiasAddGrad), so a trainer built with
`tf.GradientTape` needs the Flex delegate. Here every layer writes its
backward pass with builtin ops instead:

| layer | forward | backward (builtin ops) |
|---|---|---|
| Dense | x W + b | dW = x^T dy (BATCH_MATMUL), db = sum(dy), dx = dy W^T |
| Conv2D, SAME/VALID, stride s | PAD, im2col (kh*kw STRIDED_SLICEs, CONCATENATION), FULLY_CONNECTED | dW = patches^T dy (BATCH_MATMUL), dx: TRANSPOSE_CONV, db: SUM |
| MaxPool p x p, stride p | MAX_POOL_2D | SPACE_TO_DEPTH, ARG_MAX over the p^2 window cells (first maximum, as TF's MaxPoolGrad), ONE_HOT, DEPTH_TO_SPACE |
| ReLU | RELU | SELECT_V2(y > 0, dy, 0) (as ReluGrad) |
| Flatten | RESHAPE | RESHAPE |
| Rescaling (dropout's scaler) | MUL | MUL |
| softmax cross-entropy | LOG_SOFTMAX, ONE_HOT | (softmax - one_hot) / count |

Conv2D as im2col + matrix product, not CONV_2D: TFLite's CONV_2D with a
non-constant filter (the trainer's weights are variables, and XNNPACK only
takes constant filters) runs 3-5x slower than TensorFlow, while its
FULLY_CONNECTED/BATCH_MATMUL kernels with non-constant weights run close
to TensorFlow's (`//mobile_export:op_benchmark`, docs/BENCHMARKS.md). The
patch matrix is kept from the forward pass for dW, which costs memory:
B*ho*wo*kh*kw*cin floats per conv layer (12.5 MB for the Caldas CNN's conv2
at batch 20). dx stays a TRANSPOSE_CONV: the col2im alternative (kh*kw
PAD + ADD) measured slower. TRANSPOSE_CONV needs a static output shape, so
the trainer's `train` signature has a fixed batch; shorter batches are
padded with rows labelled -1, which contribute nothing.

Layers are read from a Keras model (`network_from_keras`), so the trainer
uses the run's exact model definition and weight order; a layer outside
this table raises `UnsupportedLayerError`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import tensorflow as tf


class UnsupportedLayerError(ValueError):
  """A Keras layer (or setting) without a builtin-op backward pass here."""


@dataclasses.dataclass(frozen=True)
class Conv2D:
  """Conv2D + bias + optional ReLU (Keras `Conv2D`, NHWC)."""

  name: str
  kernel_size: tuple[int, int]
  strides: tuple[int, int]
  padding: str  # 'same' | 'valid'
  relu: bool
  use_bias: bool

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

  def _patches(self, xp, ho, wo):
    """im2col: [B*ho*wo, kh*kw*cin], column order (i, j, c) as the kernel's."""
    kh, kw = self.kernel_size
    sh, sw = self.strides
    cols = [xp[:, i:i + (ho - 1) * sh + 1:sh, j:j + (wo - 1) * sw + 1:sw, :]
            for i in range(kh) for j in range(kw)]
    p = tf.concat(cols, axis=3) if len(cols) > 1 else cols[0]
    return tf.reshape(p, [-1, kh * kw * xp.shape[3]])

  def forward(self, x, weights):
    (pt, pb), (pl, pr) = self._pads(x.shape[1], x.shape[2])
    xp = tf.pad(x, [[0, 0], [pt, pb], [pl, pr], [0, 0]]) if (
        pt or pb or pl or pr) else x
    kernel = weights[0]
    kh, kw, cin, cout = kernel.shape
    sh, sw = self.strides
    ho = (xp.shape[1] - kh) // sh + 1
    wo = (xp.shape[2] - kw) // sw + 1
    patches = self._patches(xp, ho, wo)
    y = tf.reshape(
        tf.matmul(patches, tf.reshape(kernel, [kh * kw * cin, cout])),
        [-1, ho, wo, cout])  # `infer` takes any batch
    if self.use_bias:
      y = y + weights[1]
    a = tf.nn.relu(y) if self.relu else y
    return a, (x, xp, patches, a)

  def backward(self, dy, cache, weights):
    x, xp, patches, a = cache
    if self.relu:
      dy = tf.where(a > 0, dy, 0.0)
    kernel = weights[0]
    kh, kw, cin, cout = kernel.shape
    sh, sw = self.strides
    batch, ho, wo, _ = dy.shape
    dy2 = tf.reshape(dy, [-1, cout])
    grads = [tf.reshape(tf.matmul(patches, dy2, transpose_a=True),
                        kernel.shape)]
    if self.use_bias:
      grads.append(tf.reduce_sum(dy2, 0))
    dxp = tf.nn.conv2d_transpose(
        dy, kernel, [batch, xp.shape[1], xp.shape[2], xp.shape[3]],
        [sh, sw], 'VALID')
    (pt, _), (pl, _) = self._pads(x.shape[1], x.shape[2])
    dx = dxp[:, pt:pt + x.shape[1], pl:pl + x.shape[2], :]
    return dx, grads


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
      y = y + weights[1]
    a = tf.nn.relu(y) if self.relu else y
    return a, (x, a)

  def backward(self, dy, cache, weights):
    x, a = cache
    if self.relu:
      dy = tf.where(a > 0, dy, 0.0)
    grads = [tf.matmul(x, dy, transpose_a=True)]
    if self.use_bias:
      grads.append(tf.reduce_sum(dy, 0))
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
    return tf.nn.max_pool2d(cropped, p, p, 'VALID'), (x, cropped)

  def backward(self, dy, cache, weights):
    del weights
    x, cropped = cache
    p = self.pool
    batch, ho, wo, c = dy.shape
    # [b, ho, wo, p*p, c]: the window cells in row-major order.
    cells = tf.reshape(tf.nn.space_to_depth(cropped, p),
                       [batch, ho, wo, p * p, c])
    first_max = tf.one_hot(tf.argmax(cells, axis=3, output_type=tf.int32),
                           p * p, axis=3, dtype=dy.dtype)
    routed = tf.reshape(first_max * dy[:, :, :, None, :],
                        [batch, ho, wo, p * p * c])
    dx = tf.nn.depth_to_space(routed, p)
    if dx.shape[1:3] != x.shape[1:3]:
      dx = tf.pad(dx, [[0, 0], [0, x.shape[1] - dx.shape[1]],
                       [0, x.shape[2] - dx.shape[2]], [0, 0]])
    return dx, []


@dataclasses.dataclass(frozen=True)
class Scale:
  """y = s x (Keras `Rescaling` without offset: Federated Dropout's scaler)."""

  name: str
  scale: float

  num_weights = 0

  def forward(self, x, weights):
    del weights
    return x * self.scale, None

  def backward(self, dy, cache, weights):
    del cache, weights
    return dy * self.scale, []


@dataclasses.dataclass(frozen=True)
class Flatten:
  name: str

  num_weights = 0

  def forward(self, x, weights):
    del weights
    return tf.reshape(x, [-1, math.prod(x.shape[1:])]), x.shape

  def backward(self, dy, cache, weights):
    del weights
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

  def loss_and_grads(self, x, y, weights):
    """Mean cross-entropy over rows with y >= 0, and its weight gradients.

    loss = -(1/m) sum_{rows r with y_r >= 0} log softmax(z_r)[y_r] with m
    the number of such rows (Keras' SparseCategoricalCrossentropy with
    from_logits and mean reduction); rows labelled -1 are padding.
    d loss / d z = (softmax(z) - one_hot(y)) * valid / m.
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
    d = (tf.exp(logp) * valid[:, None] - onehot) / count
    grads = [None] * len(self.layers)
    for i in reversed(range(len(self.layers))):
      d, grads[i] = self.layers[i].backward(d, caches[i], per_layer[i])
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
      layers=tuple(layers),
      input_shape=tuple(int(d) for d in model.input_shape[1:]),
      num_classes=int(out_shape[-1]),
      weight_shapes=tuple(tuple(int(d) for d in w.shape)
                          for w in model.weights),
      weight_names=tuple(w.name for w in model.weights))

