"""Bottleneck ResNets for CIFAR-sized inputs, split for FedGKT.

The architecture follows FedML's FedGKT models (He et al., NeurIPS 2020,
`fedml_api/model/cv/resnet56_gkt`), which are the CIFAR ResNets of He et al.
2016 built from bottleneck blocks:

* stem: 3x3 convolution to 16 channels (stride 1, no bias) -> batch norm ->
  ReLU. Its output, ``[H, W, 16]`` at the input resolution, is the feature
  map an edge device sends in FedGKT.
* three stages of ``n`` bottleneck blocks each with 16, 32 and 64 planes
  (block output = 4 x planes channels); stages 2 and 3 start with stride 2.
  A bottleneck block is 1x1 conv -> BN -> ReLU -> 3x3 conv (stride) -> BN ->
  ReLU -> 1x1 conv -> BN, plus the shortcut (identity, or 1x1 conv (stride)
  -> BN when the shape changes), then ReLU.
* global average pooling -> dense logits.

Depth counts the weighted layers on the main path: 9 n + 2, so ResNet-20,
-56 and -110 have n = 2, 6 and 12 blocks per stage. The edge model
("ResNet-8") is the stem, ``edge_blocks`` = 2 bottleneck blocks of 16 planes
(3 x 2 + 2 = 8 layers) and its own classifier; the server model is
everything after the stem. Stem + server body = the whole network, which is
the model FedAvg trains in the baseline.

Batch norm uses PyTorch's defaults (momentum 0.1 of the new batch, i.e.
Keras ``momentum=0.9``; epsilon 1e-5), convolutions He-normal with fan-out
(PyTorch ``kaiming_normal_(mode='fan_out')``). Every initializer is seeded.
Every layer has a stable name, so weights can be moved between the whole
network and its two halves by name (:func:`copy_weights_by_name`).
"""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

STEM_CHANNELS = 16
EXPANSION = 4
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5
STAGE_PLANES = (16, 32, 64)

# Whole-network depth -> bottleneck blocks per stage (depth = 9 n + 2).
DEPTHS = {11: 1, 20: 2, 56: 6, 110: 12}
# Edge model name -> bottleneck blocks after the stem (depth = 3 n + 2).
EDGE_BLOCKS = {'resnet5': 1, 'resnet8': 2}


class _Seeds:
  """A seeded initializer per layer: seed, seed + 1, ... in build order."""

  def __init__(self, seed: int):
    self._next = seed

  def conv(self) -> tf.keras.initializers.Initializer:
    self._next += 1
    return tf.keras.initializers.VarianceScaling(
        scale=2.0, mode='fan_out', distribution='untruncated_normal',
        seed=self._next)

  def dense(self) -> tf.keras.initializers.Initializer:
    self._next += 1
    return tf.keras.initializers.GlorotUniform(seed=self._next)


def _conv(x, filters, kernel, stride, name, seeds):
  return tf.keras.layers.Conv2D(
      filters, kernel, strides=stride, padding='same', use_bias=False,
      kernel_initializer=seeds.conv(), name=name)(x)


def _bn(x, name):
  return tf.keras.layers.BatchNormalization(
      momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=name)(x)


def _bottleneck(x, planes: int, stride: int, name: str, seeds: _Seeds):
  """One bottleneck block; `x` is NHWC."""
  out_channels = planes * EXPANSION
  shortcut = x
  if stride != 1 or x.shape[-1] != out_channels:
    shortcut = _conv(x, out_channels, 1, stride, f'{name}_down_conv', seeds)
    shortcut = _bn(shortcut, f'{name}_down_bn')
  y = _conv(x, planes, 1, 1, f'{name}_conv1', seeds)
  y = tf.keras.layers.ReLU(name=f'{name}_relu1')(_bn(y, f'{name}_bn1'))
  y = _conv(y, planes, 3, stride, f'{name}_conv2', seeds)
  y = tf.keras.layers.ReLU(name=f'{name}_relu2')(_bn(y, f'{name}_bn2'))
  y = _conv(y, out_channels, 1, 1, f'{name}_conv3', seeds)
  y = _bn(y, f'{name}_bn3')
  y = tf.keras.layers.Add(name=f'{name}_add')([y, shortcut])
  return tf.keras.layers.ReLU(name=f'{name}_out')(y)


def _stem(x, seeds: _Seeds):
  y = _conv(x, STEM_CHANNELS, 3, 1, 'stem_conv', seeds)
  return tf.keras.layers.ReLU(name='stem_relu')(_bn(y, 'stem_bn'))


def _body(x, blocks_per_stage: int, seeds: _Seeds):
  for s, planes in enumerate(STAGE_PLANES):
    for b in range(blocks_per_stage):
      stride = 2 if (s > 0 and b == 0) else 1
      x = _bottleneck(x, planes, stride, f'stage{s + 1}_block{b + 1}', seeds)
  return x


def _head(x, num_classes: int, seeds: _Seeds, name: str):
  x = tf.keras.layers.GlobalAveragePooling2D(name=f'{name}_pool')(x)
  return tf.keras.layers.Dense(
      num_classes, kernel_initializer=seeds.dense(), name=name)(x)


def _blocks_for_depth(depth: int) -> int:
  if depth not in DEPTHS:
    raise ValueError(f'ResNet depth {depth} is not one of {sorted(DEPTHS)}')
  return DEPTHS[depth]


def feature_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
  """Shape of the stem's output (the transmitted feature map) per example."""
  return (int(input_shape[0]), int(input_shape[1]), STEM_CHANNELS)


def build_resnet(input_shape: Sequence[int], num_classes: int, depth: int,
                 seed: int = 0) -> tf.keras.Model:
  """The whole network (stem + body + classifier): input -> logits."""
  seeds = _Seeds(seed)
  inputs = tf.keras.Input(shape=tuple(input_shape), name='image')
  x = _stem(inputs, seeds)
  x = _body(x, _blocks_for_depth(depth), seeds)
  return tf.keras.Model(inputs, _head(x, num_classes, seeds, 'logits'),
                        name=f'resnet{depth}')


def build_server_model(input_shape: Sequence[int], num_classes: int,
                       depth: int, seed: int = 0) -> tf.keras.Model:
  """The whole network minus its stem: feature map -> logits.

  Args:
    input_shape: The *image* shape; the model's input is
      :func:`feature_shape` of it.
    num_classes: Number of logits.
    depth: Depth of the whole network it completes (20, 56, 110; 11 for tests).
    seed: Initializer seed.
  """
  seeds = _Seeds(seed)
  seeds.conv()  # Keep the body's seeds equal to those of build_resnet.
  inputs = tf.keras.Input(shape=feature_shape(input_shape), name='features')
  x = _body(inputs, _blocks_for_depth(depth), seeds)
  return tf.keras.Model(inputs, _head(x, num_classes, seeds, 'logits'),
                        name=f'resnet{depth}_server')


def build_edge_model(input_shape: Sequence[int], num_classes: int,
                     blocks: int = 2, seed: int = 0) -> tf.keras.Model:
  """The edge model: input -> [logits, stem feature map].

  The stem is the same as :func:`build_resnet`'s (same layer names), followed
  by `blocks` bottleneck blocks of 16 planes at full resolution and a
  classifier named ``edge_logits``.
  """
  seeds = _Seeds(seed)
  inputs = tf.keras.Input(shape=tuple(input_shape), name='image')
  features = _stem(inputs, seeds)
  x = features
  for b in range(blocks):
    x = _bottleneck(x, STAGE_PLANES[0], 1, f'edge_block{b + 1}', seeds)
  logits = _head(x, num_classes, seeds, 'edge_logits')
  return tf.keras.Model(inputs, [logits, features],
                        name=f'resnet{3 * blocks + 2}_edge')


def build_edge_classifier(input_shape: Sequence[int], num_classes: int,
                          blocks: int = 2, seed: int = 0) -> tf.keras.Model:
  """The edge model with only its logits output (for FLOP/param reports)."""
  edge = build_edge_model(input_shape, num_classes, blocks, seed)
  return tf.keras.Model(edge.input, edge.outputs[0], name=edge.name)


def copy_weights_by_name(source: tf.keras.Model, target: tf.keras.Model,
                         only: Optional[Sequence[str]] = None) -> list[str]:
  """Copies the weights of same-named layers from `source` into `target`.

  Args:
    source: Model to read.
    target: Model to write.
    only: If given, copy only these layer names (each must exist in both).

  Returns:
    The names of the layers copied.
  """
  src = {l.name: l for l in source.layers if l.weights}
  names = [l.name for l in target.layers if l.weights and l.name in src]
  if only is not None:
    missing = [n for n in only if n not in names]
    if missing:
      raise ValueError(f'layers {missing} are not in both models')
    names = list(only)
  for name in names:
    target.get_layer(name).set_weights(src[name].get_weights())
  return names


def _registered(depth: int):
  def build(input_shape, num_classes, seed: int = 0) -> tf.keras.Model:
    return build_resnet(input_shape, num_classes, depth, seed=seed)
  build.__doc__ = f'Bottleneck ResNet-{depth} (stem + 3 stages), logits.'
  return build


def build_resnet8(input_shape, num_classes, seed: int = 0) -> tf.keras.Model:
  """FedGKT's edge ResNet-8 as a standalone classifier (logits output)."""
  return build_edge_classifier(input_shape, num_classes,
                               EDGE_BLOCKS['resnet8'], seed)


build_resnet20 = _registered(20)
build_resnet56 = _registered(56)
build_resnet110 = _registered(110)
