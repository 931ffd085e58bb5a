"""A Keras model as a function of G stacked weight copies: one forward pass
for a whole cohort of simulated clients.

Cohort execution (`cohorts/client_work.py`) trains G simulated clients in
one TFF client. Each client has its own copy of the weights, so the G
forward passes are G different functions; they run as *one* batched
computation by stacking every weight to ``[G, ...]`` and every input to
``[G, B, ...]``:

  Dense     ``einsum('gbi,gio->gbo', x, W) + b[:, None]`` (a batched matmul)
  Conv2D    a grouped convolution: the G clients' channels side by side,
            ``G`` groups of the client's own filters
  MaxPool2D / Flatten / Rescaling / ReLU
            per example, on ``[G·B, ...]``

Because client g's loss depends on its weights only, the gradient of the
sum of the G losses with respect to the stacked weights is the stack of the
G clients' own gradients, so one backward pass serves the cohort too.

Only layers with such a batched form are supported; `check` names the first
one that is not (batch normalization keeps per-client statistics, dropout
layers draw per-client noise, ...).
"""

from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf

_ACTIVATIONS = {'linear': tf.identity, 'relu': tf.nn.relu}


class CohortError(ValueError):
  """The model (or a setting) cannot run as a vectorized cohort."""


def _activation(layer) -> Callable[[tf.Tensor], tf.Tensor]:
  name = tf.keras.activations.serialize(layer.activation)
  if isinstance(name, dict):
    name = name.get('config', {}).get('name', name.get('class_name'))
  if name not in _ACTIVATIONS:
    raise CohortError(f'layer {layer.name!r} has activation {name!r}; '
                      f'cohort execution supports {sorted(_ACTIVATIONS)}')
  return _ACTIVATIONS[name]


def _dense(layer, index):
  act = _activation(layer)
  kernel, bias = index[id(layer.kernel)], (
      index[id(layer.bias)] if layer.use_bias else None)

  def apply(w, x):
    y = tf.einsum('gbi,gio->gbo', x, w[kernel])
    if bias is not None:
      y += w[bias][:, None, :]
    return act(y)

  return apply


def _conv2d(layer, index):
  act = _activation(layer)
  if layer.data_format != 'channels_last' or any(
      d != 1 for d in layer.dilation_rate) or layer.groups != 1:
    raise CohortError(
        f'layer {layer.name!r}: cohort execution supports channels_last, '
        'undilated, ungrouped Conv2D only')
  kernel, bias = index[id(layer.kernel)], (
      index[id(layer.bias)] if layer.use_bias else None)
  strides = list(layer.strides)
  padding = layer.padding.upper()

  def apply(w, x):
    g = tf.shape(x)[0]
    b, h, wd, c = (tf.shape(x)[i] for i in range(1, 5))
    f = w[kernel]  # [G, kh, kw, C, O]
    kh, kw, o = f.shape[1], f.shape[2], f.shape[4]
    # [G, B, H, W, C] -> [B, H, W, G*C]; filters [kh, kw, C, G*O]: the
    # convolution infers G groups from the channel counts, so output block
    # g sees input block g only.
    xg = tf.reshape(tf.transpose(x, [1, 2, 3, 0, 4]), [b, h, wd, g * c])
    fg = tf.reshape(tf.transpose(f, [1, 2, 3, 0, 4]),
                    [kh, kw, f.shape[3], -1])
    y = tf.nn.conv2d(xg, fg, strides=strides, padding=padding)
    shape = tf.shape(y)
    y = tf.transpose(tf.reshape(y, [shape[0], shape[1], shape[2], g, o]),
                     [3, 0, 1, 2, 4])
    if bias is not None:
      y += w[bias][:, None, None, None, :]
    return act(y)

  return apply


def _per_example(fn):
  """Applies `fn` to ``[G·B, ...]`` and restores the ``[G, B]`` dims."""

  def apply(w, x):
    del w
    g, b = tf.shape(x)[0], tf.shape(x)[1]
    y = fn(tf.reshape(x, tf.concat([[g * b], tf.shape(x)[2:]], 0)))
    return tf.reshape(y, tf.concat([[g, b], tf.shape(y)[1:]], 0))

  return apply


def _layer_fn(layer, index):
  layers = tf.keras.layers
  if isinstance(layer, layers.Dense):
    return _dense(layer, index)
  if isinstance(layer, layers.Conv2D) and type(layer) is layers.Conv2D:
    return _conv2d(layer, index)
  if isinstance(layer, layers.MaxPooling2D):
    if layer.data_format != 'channels_last':
      raise CohortError(f'layer {layer.name!r}: channels_last only')
    pool, strides = list(layer.pool_size), list(layer.strides)
    padding = layer.padding.upper()
    return _per_example(lambda x: tf.nn.max_pool2d(x, pool, strides,
                                                   padding))
  if isinstance(layer, layers.Flatten):
    return lambda w, x: tf.reshape(
        x, tf.stack([tf.shape(x)[0], tf.shape(x)[1], -1]))
  if isinstance(layer, layers.Rescaling):
    scale, offset = float(layer.scale), float(layer.offset)
    return lambda w, x: x * scale + offset
  if isinstance(layer, layers.ReLU) and layer.max_value is None and not (
      float(layer.negative_slope) or float(layer.threshold)):
    return lambda w, x: tf.nn.relu(x)
  raise CohortError(
      f'layer {layer.name!r} ({type(layer).__name__}) has no vectorized '
      'form; cohort execution supports Dense, Conv2D, MaxPooling2D, '
      'Flatten, Rescaling and plain ReLU layers (runtime.cohort_size=1 runs '
      'any model)')


class BatchedModel:
  """`forward(weights, x)`: G weight copies on G clients' batches at once.

  Args:
    model: A `tf.keras.Sequential` of supported layers whose output is the
      logits.

  Raises:
    CohortError: The model is not a Sequential, has non-trainable weights,
      or a layer has no batched form.
  """

  def __init__(self, model: tf.keras.Model):
    if not isinstance(model, tf.keras.Sequential):
      raise CohortError(f'model {model.name!r} is not a Sequential model; '
                        'cohort execution vectorizes layer by layer')
    if model.non_trainable_weights:
      raise CohortError(
          f'model {model.name!r} has non-trainable weights (e.g. batch '
          'normalization statistics); cohort execution cannot vectorize it')
    index = {id(v): i for i, v in enumerate(model.trainable_weights)}
    self._fns = [_layer_fn(layer, index) for layer in model.layers]
    self.shapes = [tuple(v.shape) for v in model.trainable_weights]

  def forward(self, weights: Sequence[tf.Tensor], x: tf.Tensor) -> tf.Tensor:
    """Logits ``[G, B, classes]`` of client g's weights on its batch.

    Args:
      weights: The trainable weights in Keras order, each ``[G, ...]``.
      x: ``[G, B, ...]`` inputs.
    """
    for fn in self._fns:
      x = fn(weights, x)
    return x


def check(model: tf.keras.Model) -> None:
  """Raises `CohortError` naming why `model` cannot run as a cohort."""
  BatchedModel(model)
