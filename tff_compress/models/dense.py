"""A small fully connected network for fast tests and smoke runs."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import tensorflow as tf

from tff_compress.models import scaling


def build_dense(
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden: Sequence[int] = (64,),
    seed: int = 0,
    widths: Optional[Mapping[str, int]] = None,
    scales: Optional[Mapping[str, float]] = None,
) -> tf.keras.Model:
  """Flatten -> ReLU dense layers of widths `hidden` -> logits.

  `widths` overrides units by layer name ('dense1', ...), as Federated
  Dropout submodels need; `scales` multiplies a hidden layer's activations
  (see `scaling.insert_scales`).
  """
  names = [f'dense{i + 1}' for i in range(len(hidden))]
  unknown = set(widths or {}) - set(names)
  if unknown:
    raise ValueError(f'dense has no hidden layer {sorted(unknown)}; '
                     f'hidden layers: {names}')
  hidden = [(widths or {}).get(n, h) for n, h in zip(names, hidden)]
  init = tf.keras.initializers.GlorotUniform
  layers = [
      tf.keras.layers.InputLayer(input_shape=input_shape),
      tf.keras.layers.Flatten(name='flatten'),
  ]
  for i, width in enumerate(hidden):
    layers.append(
        tf.keras.layers.Dense(
            width, activation='relu', name=f'dense{i + 1}',
            kernel_initializer=init(seed=seed + i)))
  layers.append(
      tf.keras.layers.Dense(
          num_classes, name='logits',
          kernel_initializer=init(seed=seed + len(hidden))))
  return tf.keras.Sequential(scaling.insert_scales(layers, scales),
                             name='dense')
