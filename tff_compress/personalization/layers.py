"""Naming a model's layers in config: which trainable variables a spec means.

A *layer spec* is a comma-separated list of Keras layer names (`'dense1,
logits'`) or `'head'`, the last layer that has trainable weights (the
classifier of every model here). It resolves to the positions of those
layers' variables in `model.trainable_weights` — the order of
`tff.learning.models.ModelWeights.trainable`, which is what the
personalization pieces slice.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

HEAD = 'head'


class LayerSpecError(ValueError):
  """A layer spec names no layer, an unknown layer or a weightless one."""


def trainable_layer_names(model: tf.keras.Model) -> list[str]:
  """Names of the layers that own trainable weights, in model order."""
  return [layer.name for layer in model.layers if layer.trainable_weights]


def parse(spec: str, model: tf.keras.Model) -> list[str]:
  """The layer names of `spec` (`'head'` resolved), in model order.

  Raises:
    LayerSpecError: `spec` is empty, names a layer the model does not have,
      or a layer without trainable weights.
  """
  names = [n.strip() for n in spec.split(',') if n.strip()]
  if not names:
    raise LayerSpecError('names no layer')
  trainable = trainable_layer_names(model)
  all_names = [layer.name for layer in model.layers]
  chosen = set()
  for name in names:
    if name == HEAD:
      chosen.add(trainable[-1])
    elif name not in all_names:
      raise LayerSpecError(
          f'names {name!r}, which {model.name} does not have; layers with '
          f'weights: {", ".join(trainable)} (or {HEAD!r})')
    elif name not in trainable:
      raise LayerSpecError(f'names {name!r}, which has no trainable weights')
    else:
      chosen.add(name)
  return [n for n in trainable if n in chosen]


def trainable_indices(model: tf.keras.Model,
                      layer_names: Sequence[str]) -> tuple[int, ...]:
  """Positions in `model.trainable_weights` of the named layers' variables."""
  wanted = {id(v) for layer in model.layers if layer.name in layer_names
            for v in layer.trainable_weights}
  return tuple(i for i, v in enumerate(model.trainable_weights)
               if id(v) in wanted)


def resolve(spec: str, model: tf.keras.Model) -> tuple[int, ...]:
  """`trainable_indices` of `parse(spec, model)`."""
  return trainable_indices(model, parse(spec, model))
