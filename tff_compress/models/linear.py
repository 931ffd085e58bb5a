"""Multinomial logistic regression, the model of the synthetic data."""

from __future__ import annotations

from typing import Mapping, Optional

import tensorflow as tf


def build_logistic(
    input_shape: tuple[int, ...],
    num_classes: int,
    seed: int = 0,
    widths: Optional[Mapping[str, int]] = None,
    scales: Optional[Mapping[str, float]] = None,
) -> tf.keras.Model:
  """Flatten -> one dense layer of logits: ``softmax(x W + b)`` when trained.

  The model of Li et al. 2020 (FedProx, ``flearn/models/synthetic/mclr.py``)
  and LEAF for the synthetic data: ``d * C + C`` parameters for ``d`` input
  features and ``C`` classes (610 for synthetic's 60 features and 10
  classes); training one example costs ``2 (2 d C + C)`` FLOPs (forward and
  weight gradient; no input gradient). The loss, as for every model here, is
  the softmax cross-entropy of the logits (`learning.task`). ``W`` starts
  Glorot-uniform from `seed` (TensorFlow's default dense initializer, as in
  FedProx), ``b`` at zero.

  Args:
    input_shape: Shape of one example, e.g. ``(60,)``; flattened.
    num_classes: Number of classes ``C``.
    seed: Seed of the kernel initializer.
    widths: Must be empty: there is no hidden layer to resize (Federated
      Dropout keeps the input and output layers whole).
    scales: Must be empty, for the same reason.

  Returns:
    A Keras ``Sequential`` model named ``'logistic'``.

  Raises:
    ValueError: `widths` or `scales` names a layer.
  """
  if widths or scales:
    raise ValueError(
        f'logistic has no hidden layer to resize or scale, got widths='
        f'{dict(widths or {})} scales={dict(scales or {})}')
  return tf.keras.Sequential([
      tf.keras.layers.InputLayer(input_shape=input_shape),
      tf.keras.layers.Flatten(name='flatten'),
      tf.keras.layers.Dense(
          num_classes, name='logits',
          kernel_initializer=tf.keras.initializers.GlorotUniform(seed=seed)),
  ], name='logistic')
