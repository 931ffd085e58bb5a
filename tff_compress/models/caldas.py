"""The CNN of Caldas et al. 2018 ("Expanding the Reach of Federated Learning").

Two 5x5 convolutions with 32 and 64 filters ('same' padding), each followed by
2x2 max-pooling, a 512-unit dense layer and a softmax output. On 28x28x1 input
with 62 classes (EMNIST) it has 1,690,046 parameters; with 10 classes
1,663,370.
"""

from __future__ import annotations

from typing import Mapping, Optional

import tensorflow as tf

from tff_compress.models import scaling

# Units (filters) of the hidden layers; `widths` overrides them by layer name
# (Federated Dropout submodels are the same network with fewer units).
HIDDEN = {'conv1': 32, 'conv2': 64, 'dense1': 512}


def build_caldas_cnn(
    input_shape: tuple[int, ...],
    num_classes: int,
    seed: int = 0,
    widths: Optional[Mapping[str, int]] = None,
    scales: Optional[Mapping[str, float]] = None,
) -> tf.keras.Model:
  """Returns the (uncompiled) Caldas CNN; the output layer emits logits.

  `widths` overrides hidden widths by layer name; `scales` multiplies a
  hidden layer's activations (see `scaling.insert_scales`).
  """
  init = tf.keras.initializers.GlorotUniform
  w = {**HIDDEN, **(widths or {})}
  unknown = set(w) - set(HIDDEN)
  if unknown:
    raise ValueError(f'caldas_cnn has no hidden layer {sorted(unknown)}; '
                     f'hidden layers: {sorted(HIDDEN)}')
  return tf.keras.Sequential(
      scaling.insert_scales([
          tf.keras.layers.InputLayer(input_shape=input_shape),
          tf.keras.layers.Conv2D(
              w['conv1'], 5, padding='same', activation='relu', name='conv1',
              kernel_initializer=init(seed=seed)),
          tf.keras.layers.MaxPool2D(2, name='pool1'),
          tf.keras.layers.Conv2D(
              w['conv2'], 5, padding='same', activation='relu', name='conv2',
              kernel_initializer=init(seed=seed + 1)),
          tf.keras.layers.MaxPool2D(2, name='pool2'),
          tf.keras.layers.Flatten(name='flatten'),
          tf.keras.layers.Dense(
              w['dense1'], activation='relu', name='dense1',
              kernel_initializer=init(seed=seed + 2)),
          tf.keras.layers.Dense(
              num_classes, name='logits',
              kernel_initializer=init(seed=seed + 3)),
      ], scales),
      name='caldas_cnn',
  )
