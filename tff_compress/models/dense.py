"""A small fully connected network for fast tests and smoke runs."""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf


def build_dense(
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden: Sequence[int] = (64,),
    seed: int = 0,
) -> tf.keras.Model:
  """Flatten -> ReLU dense layers of widths `hidden` -> logits."""
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
  return tf.keras.Sequential(layers, name='dense')
