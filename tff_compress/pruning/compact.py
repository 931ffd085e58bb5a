"""A units-pruned model as the smaller model it is.

After `pruning.structure=units` the global model still has its full shapes,
with the pruned units' incoming weights and biases at exactly zero. Such a
unit outputs relu(0) = 0 (the supported models put ReLU or nothing after a
hidden layer), so removing it and the next layer's weights that read it
changes no output: the result is the smaller model a phone should run
(fewer parameters, FLOPs and bytes), not a full-size model full of zeros.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from tff_compress.dropout import submodel


def alive_units(model: tf.keras.Model,
                weights: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
  """{hidden layer: indices of its units with a non-zero incoming weight
  or bias}, for every hidden Conv2D/Dense layer of `model`.

  A layer with no live unit keeps unit 0 (a layer of width 0 cannot be
  built; the unit outputs 0 either way).

  Args:
    model: The full Keras model (`Sequential`, no non-trainable weights).
    weights: Its trainable weights, in `model.trainable_weights` order.

  Raises:
    ValueError: `weights` do not have the model's shapes.
  """
  want = [tuple(w.shape) for w in model.trainable_weights]
  got = [tuple(np.shape(w)) for w in weights]
  if got != want:
    raise ValueError(f'weights have shapes {got}; the model has {want}')
  index = {id(w): i for i, w in enumerate(model.trainable_weights)}
  by_name = {l.name: l for l in model.layers}
  out = {}
  for name in submodel.droppable_layers(model):
    layer = by_name[name]
    kernel = np.asarray(weights[index[id(layer.kernel)]])
    alive = np.any(kernel != 0, axis=tuple(range(kernel.ndim - 1)))
    if layer.use_bias:
      alive |= np.asarray(weights[index[id(layer.bias)]]) != 0
    ids = np.flatnonzero(alive).astype(np.int32)
    out[name] = ids if ids.size else np.zeros([1], np.int32)
  return out


def compact(model: tf.keras.Model, weights: Sequence[np.ndarray]
            ) -> tuple[dict[str, int], list[np.ndarray]]:
  """(widths, weights) of the smaller model without `model`'s dead units.

  `widths` is what the model builders take (`registry.build_model(...,
  widths=widths)`); the weights are in that model's trainable order.

  Raises:
    ValueError: `weights` do not have the model's shapes.
    submodel.SubmodelError: an unsupported layer or non-trainable weights.
  """
  full = submodel.build_plan(model)
  kept = alive_units(model, weights)
  plan = submodel.SubmodelPlan(
      layers=full.layers, units=full.units,
      kept=tuple(int(kept[n].size) for n in full.layers),
      weights=full.weights, full_shapes=full.full_shapes)
  ids = {n: tf.constant(v) for n, v in kept.items()}
  sub = plan.gather([tf.constant(w) for w in weights], ids)
  return plan.widths, [w.numpy() for w in sub]
