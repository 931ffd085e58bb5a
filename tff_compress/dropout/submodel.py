"""Federated Dropout submodels: which units a client keeps, gather and scatter.

Caldas et al. 2018 ("Expanding the Reach of Federated Learning by Reducing
Client Resource Requirements", Sec. 3): each client trains a smaller network
obtained by dropping a fixed fraction of the hidden units of every hidden
layer — whole dense units and whole conv filters — so the submodel is a real
smaller model (smaller matrices, fewer filters) and both its FLOPs and its
bytes shrink. The input and output layers keep all their inputs/outputs.

Conventions:
  * A hidden layer with `n` units keeps `k = max(1, round(p * n))` of them.
  * The plan itself does not rescale: the submodel's forward pass equals
    the full model's with the dropped units' activations set to zero
    (Caldas et al.'s convention). `dropout.rescale` (default on) adds a
    weightless n/k `Rescaling` after each dropped layer of the model a
    client trains (`SubmodelPlan.scales`, `models/scaling.py`); the full
    model is evaluated unscaled.
  * Kept units are the `k` smallest of `n` stateless uniform draws, sorted by
    index, from a seed made of (config seed, round, mask key, layer index).
    The mask key is the client's slot in the round (`per_client`) or 0
    (`per_round`), so masks are a function of the config and the round only —
    a resumed run draws the same masks.

A :class:`SubmodelPlan` records, for every weight tensor of a Keras
`Sequential` model, which axes are indexed by which layer's kept units; it
supports Conv2D, Dense, pooling, Flatten, Dropout and Activation layers.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf


class SubmodelError(ValueError):
  """A dropout setting does not fit the model (unknown layer, bad fraction)."""


_PASS_THROUGH = (
    tf.keras.layers.MaxPool2D, tf.keras.layers.AveragePooling2D,
    tf.keras.layers.Rescaling,
    tf.keras.layers.Dropout, tf.keras.layers.Activation,
    tf.keras.layers.InputLayer,
)


@dataclasses.dataclass(frozen=True)
class AxisIndex:
  """Axis `axis` of a weight is indexed by the kept units of `layer`.

  For the first dense layer after a Flatten, each kept channel of the conv
  layer before it stands for `repeat` rows (one per spatial position) of the
  `channels`-wide flattened input, in channels-last order.
  """
  axis: int
  layer: str
  channels: int = 0
  repeat: int = 1


@dataclasses.dataclass(frozen=True)
class SubmodelPlan:
  """How each (trainable) weight of a model maps to its submodel."""

  layers: tuple[str, ...]              # droppable (hidden) layers, in order
  units: tuple[int, ...]               # their full widths
  kept: tuple[int, ...]                # their submodel widths
  weights: tuple[tuple[AxisIndex, ...], ...]  # per trainable weight
  full_shapes: tuple[tuple[int, ...], ...]

  @property
  def widths(self) -> dict[str, int]:
    """Submodel widths by layer name (the model builders' `widths=`)."""
    return dict(zip(self.layers, self.kept))

  @property
  def scales(self) -> dict[str, float]:
    """n/k per dropped layer: the activation scale of inverted dropout."""
    return {l: n / k for l, n, k in zip(self.layers, self.units, self.kept)
            if k != n}

  @property
  def is_identity(self) -> bool:
    return self.kept == self.units

  def keep_fractions(self) -> dict[str, float]:
    return {l: k / n for l, k, n in zip(self.layers, self.kept, self.units)}

  # --- masks -------------------------------------------------------------

  def kept_indices(self, seed: tf.Tensor) -> dict[str, tf.Tensor]:
    """{layer: sorted int32 indices of its kept units} for a mask seed.

    Args:
      seed: int64 [2] stateless seed of one mask (see :func:`mask_seed`).
    """
    out = {}
    for i, (layer, n, k) in enumerate(zip(self.layers, self.units, self.kept)):
      if k == n:
        out[layer] = tf.range(n, dtype=tf.int32)
        continue
      draws = tf.random.stateless_uniform(
          [n], seed=tf.random.experimental.stateless_fold_in(seed, i))
      picked = tf.math.top_k(-draws, k=k, sorted=False).indices
      out[layer] = tf.sort(tf.cast(picked, tf.int32))
    return out

  def _axis_ids(self, a: AxisIndex, kept: Mapping[str, tf.Tensor]):
    ids = kept[a.layer]
    if a.repeat == 1:
      return ids
    spatial = tf.range(a.repeat, dtype=tf.int32)[:, None] * a.channels
    return tf.reshape(spatial + ids[None, :], [-1])

  # --- gather / scatter ---------------------------------------------------

  def gather(self, trainable: Sequence[tf.Tensor],
             kept: Mapping[str, tf.Tensor]) -> list[tf.Tensor]:
    """Full-model trainable weights -> submodel trainable weights."""
    out = []
    for w, axes in zip(trainable, self.weights):
      for a in axes:
        w = tf.gather(w, self._axis_ids(a, kept), axis=a.axis)
      out.append(w)
    return out

  def scatter(self, sub: Sequence[tf.Tensor],
              kept: Mapping[str, tf.Tensor]) -> list[tf.Tensor]:
    """Submodel-shaped values -> full shapes, zeros where not kept."""
    out = []
    for w, axes, shape in zip(sub, self.weights, self.full_shapes):
      for a in reversed(axes):
        w = _scatter_axis(w, self._axis_ids(a, kept), a.axis, shape[a.axis])
      out.append(tf.ensure_shape(w, shape))
    return out

  def coverage(self, kept: Mapping[str, tf.Tensor]) -> list[tf.Tensor]:
    """1.0 where a client with this mask trains a coordinate, else 0.0."""
    ones = [tf.ones(s, tf.float32) for s in self.sub_shapes()]
    return self.scatter(ones, kept)

  def sub_shapes(self) -> list[tuple[int, ...]]:
    width = dict(zip(self.layers, self.kept))
    shapes = []
    for axes, shape in zip(self.weights, self.full_shapes):
      s = list(shape)
      for a in axes:
        s[a.axis] = width[a.layer] * a.repeat
      shapes.append(tuple(s))
    return shapes


def _scatter_axis(x: tf.Tensor, ids: tf.Tensor, axis: int, n: int) -> tf.Tensor:
  """Inverse of tf.gather(full, ids, axis) with zeros elsewhere."""
  rank = len(x.shape)
  perm = [axis] + [i for i in range(rank) if i != axis]
  xt = tf.transpose(x, perm)
  full = tf.scatter_nd(ids[:, None], xt,
                       tf.concat([[n], tf.shape(xt)[1:]], axis=0))
  return tf.transpose(full, np.argsort(perm).tolist())


def mask_seed(base_seed: int, round_num: tf.Tensor, key: tf.Tensor) -> tf.Tensor:
  """The stateless seed of the mask of slot `key` in round `round_num`."""
  s = tf.stack([tf.constant(base_seed, tf.int64),
                tf.cast(round_num, tf.int64)])
  s = tf.random.experimental.stateless_fold_in(s, tf.constant(0x0D70, tf.int64))
  return tf.random.experimental.stateless_fold_in(s, tf.cast(key, tf.int64))


def droppable_layers(model: tf.keras.Model) -> list[str]:
  """Hidden Conv2D/Dense layers (every one but the output layer)."""
  names = [l.name for l in model.layers
           if isinstance(l, (tf.keras.layers.Conv2D, tf.keras.layers.Dense))]
  return names[:-1]


def parse_per_layer(text: str, key: str = 'dropout.per_layer') -> dict:
  """'conv1=0.75,dense1=0.5' -> {'conv1': 0.75, 'dense1': 0.5}."""
  out = {}
  for item in filter(None, (t.strip() for t in text.split(','))):
    name, sep, value = item.partition('=')
    name = name.strip()
    try:
      if not sep or not name:
        raise ValueError
      out[name] = float(value)
    except ValueError:
      raise SubmodelError(
          f'config key {key!r} has {item!r}; expected LAYER=FRACTION items '
          'separated by commas, e.g. conv1=0.75,dense1=0.5') from None
  return out


def keep_fractions(model: tf.keras.Model, keep: float,
                   per_layer: Mapping[str, float]) -> dict[str, float]:
  """Keep fraction of every droppable layer; per-layer values override."""
  layers = droppable_layers(model)
  for name, p in per_layer.items():
    if name not in layers:
      raise SubmodelError(
          f'config key \'dropout.per_layer\' names layer {name!r}, which '
          f'{model.name} cannot drop; droppable layers: {", ".join(layers)}')
    if not 0.0 < p <= 1.0:
      raise SubmodelError(
          f'config key \'dropout.per_layer\' gives {name}={p}; allowed: (0, 1]')
  return {name: float(per_layer.get(name, keep)) for name in layers}


def build_plan(model: tf.keras.Model,
               fractions: Optional[Mapping[str, float]] = None) -> SubmodelPlan:
  """Walks a Sequential model and records how its weights map to a submodel.

  Args:
    model: A built Keras `Sequential` model of supported layers.
    fractions: Keep fraction per droppable layer (default: keep all).

  Raises:
    SubmodelError: An unsupported layer, or a model with non-trainable
      weights (batch norm statistics would need their own rule).
  """
  fractions = dict(fractions or {})
  droppable = droppable_layers(model)
  if model.non_trainable_weights:
    raise SubmodelError(f'Federated Dropout does not support {model.name}: '
                        'it has non-trainable weights (batch norm)')
  units, kept, weights, shapes = [], [], [], []
  incoming: Optional[AxisIndex] = None  # how the current input axis is indexed
  for layer in model.layers:
    if isinstance(layer, (tf.keras.layers.Conv2D, tf.keras.layers.Dense)):
      own = layer.name in droppable
      n = layer.filters if isinstance(layer, tf.keras.layers.Conv2D) else (
          layer.units)
      kernel_axes = []
      if incoming is not None:
        kernel_axes.append(dataclasses.replace(
            incoming, axis=len(layer.kernel.shape) - 2))
      if own:
        k = max(1, int(round(fractions.get(layer.name, 1.0) * n)))
        units.append(n)
        kept.append(k)
        kernel_axes.append(AxisIndex(len(layer.kernel.shape) - 1, layer.name))
      for w in layer.trainable_weights:
        if w is layer.kernel:
          weights.append(tuple(kernel_axes))
        elif own:  # the bias
          weights.append((AxisIndex(0, layer.name),))
        else:
          weights.append(())
        shapes.append(tuple(w.shape))
      incoming = AxisIndex(0, layer.name) if own else None
    elif isinstance(layer, tf.keras.layers.Flatten):
      if incoming is not None:
        h, w, c = layer.input_shape[1:]
        incoming = AxisIndex(0, incoming.layer, channels=c, repeat=h * w)
    elif isinstance(layer, _PASS_THROUGH):
      if layer.trainable_weights:
        raise SubmodelError(f'layer {layer.name} has weights')
    else:
      raise SubmodelError(
          f'Federated Dropout does not support layer {layer.name} '
          f'({type(layer).__name__}) of {model.name}')
  if len(weights) != len(model.trainable_weights):
    raise SubmodelError(f'{model.name}: could not map every weight')
  return SubmodelPlan(tuple(droppable), tuple(units), tuple(kept),
                      tuple(weights), tuple(shapes))


def plan_for(model: tf.keras.Model, dropout) -> Optional[SubmodelPlan]:
  """The submodel plan of `dropout.*` for `model`, or None if every unit
  is kept. The one rule the simulation, the export and the device-round
  server share.

  Args:
    model: The global Keras model.
    dropout: The `dropout.*` settings (`dropout.settings.DropoutSettings`).

  Raises:
    SubmodelError: `dropout.*` does not fit the model.
  """
  if not dropout.active:
    return None
  plan = build_plan(model, keep_fractions(
      model, dropout.keep, parse_per_layer(dropout.per_layer)))
  return None if plan.is_identity else plan
