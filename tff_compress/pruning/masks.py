"""Global pruning masks: which coordinates a phase keeps, and how it cuts.

A *layout* fixes which weights a mask covers and how a phase of sparsity s
cuts the model:

* `ElementLayout` (structure `unstructured`, `m_by_n`, `block`): one mask
  per pruned kernel, of the kernel's shape. Clients train the full-shape
  model under the mask (tfmot's `prune_low_magnitude` wrapper multiplies
  the kernel by it before every forward pass); both directions send only
  the kept values of a pruned kernel, as a vector in row-major order.
* `UnitLayout` (structure `units`): one mask per pruned hidden layer over
  its units (dense units, conv filters). A phase is a `SubmodelPlan` with
  fixed kept indices: clients train a real smaller model, exactly like a
  Federated Dropout submodel, and both directions send it.

Kept counts follow tfmot (`pruning_impl._update_mask`): a tensor of n
entries keeps ``k = max(1, round(n · (1 − s)))`` at sparsity s (blocks and
units are the entries of their layouts); unlike tfmot's threshold, ties
never keep more than k, because every phase has static tensor shapes.

The mask of a phase is recomputed on the server from the magnitudes of the
aggregated model, among the coordinates the previous mask kept (a masked
coordinate is never revived): the k largest |w| (`unstructured`), the
N − M largest of every N consecutive input weights of an output in TFLite's
kernel layout (tfmot's `m_by_n`), the k largest block means of |w|
(tfmot's `block_size` with AVG pooling), or the k units with the largest
L2 norm of their incoming weights and bias (`units`, Li et al. 2017 use the
L1 norm of a filter). The update is idempotent: a mask that already keeps k
entries is returned unchanged, so every round of a phase may run it.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from tff_compress.dropout import submodel
from tff_compress.encoders import stages
from tff_compress.learning import task as task_lib

_PRUNABLE = (tf.keras.layers.Conv2D, tf.keras.layers.Dense)
# tfmot's wrapper updates its own mask only from this step on: never, on a
# client (the server decides the global mask).
_NEVER = 2**62


class PruningError(ValueError):
  """The pruning settings do not fit the model (message names the key)."""


def kept_count(n: int, sparsity: float) -> int:
  """Entries kept of n at `sparsity`, as tfmot computes it (float32)."""
  keep = np.float32(n) * (np.float32(1.0) - np.float32(sparsity))
  return max(1, int(np.round(keep)))


# ---- which layers --------------------------------------------------------------


def _layer_problem(layer, structure: str, m_by_n, block) -> Optional[str]:
  """Why `layer` cannot be pruned with `structure`, or None."""
  kernel = layer.kernel.shape
  if structure == 'm_by_n' and kernel[-2] % m_by_n[1]:
    return (f'its {kernel[-2]} input channels are not a multiple of '
            f'N = {m_by_n[1]}')
  if structure == 'block':
    if not isinstance(layer, tf.keras.layers.Dense):
      return 'block sparsity applies to Dense kernels only (as in tfmot)'
    if kernel[0] % block[0] or kernel[1] % block[1]:
      return (f'its kernel {tuple(kernel)} is not a whole number of '
              f'{block[0]}x{block[1]} blocks')
  return None


def resolve_layers(model: tf.keras.Model, pruning) -> tuple[str, ...]:
  """The layers `pruning.*` prunes in `model`, in model order.

  Args:
    model: The global Keras model (a `Sequential` of supported layers).
    pruning: `pruning.*` (a `settings.PruningSettings`).

  Raises:
    PruningError: a named layer does not exist or cannot take the
      structure, the structure fits no layer, or the model is unsupported.
  """
  if model.non_trainable_weights:
    raise PruningError(
        f"config key 'pruning.target' cannot apply: {model.name} has "
        'non-trainable weights (batch norm), which pruning does not support')
  try:
    plan = submodel.build_plan(model)
  except submodel.SubmodelError as e:
    raise PruningError(f"config key 'pruning.target' cannot apply: {e}"
                       ) from e
  structure = pruning.structure
  m_by_n, block = pruning.m_by_n_pair, pruning.block_shape
  layers = {l.name: l for l in model.layers if isinstance(l, _PRUNABLE)}
  candidates = plan.layers if structure == 'units' else tuple(layers)
  named = pruning.layer_names
  if named is None:
    chosen = tuple(n for n in candidates if _layer_problem(
        layers[n], structure, m_by_n, block) is None)
    if not chosen:
      raise PruningError(
          f"config key 'pruning.structure' is {structure!r}, which fits no "
          f'layer of {model.name}')
    return chosen
  for name in named:
    if name not in candidates:
      kind = 'hidden Conv2D/Dense' if structure == 'units' else 'Conv2D/Dense'
      raise PruningError(
          f"config key 'pruning.layers' names {name!r}, not a {kind} layer "
          f'of {model.name} (structure={structure}); allowed: '
          f'{", ".join(candidates)}')
    problem = _layer_problem(layers[name], structure, m_by_n, block)
    if problem:
      raise PruningError(
          f"config key 'pruning.layers' names {name!r}, which "
          f'structure={structure} cannot prune: {problem}')
  if len(set(named)) != len(named):
    raise PruningError(
        f"config key 'pruning.layers' names a layer twice: {pruning.layers!r}")
  return tuple(n for n in candidates if n in named)


# ---- mask bits on the wire -------------------------------------------------------

_BITS = stages.BitpackStage(1)


def pack(mask: tf.Tensor) -> tf.Tensor:
  """A bool mask as packed bits: uint8[ceil(n / 8)], least significant
  bit first, row-major order."""
  flat = tf.cast(tf.reshape(mask, [-1]), tf.int32)
  return _BITS.encode(flat, None)['values']


def unpack(packed: tf.Tensor, shape: Sequence[int]) -> tf.Tensor:
  """Inverse of :func:`pack`."""
  n = int(np.prod(shape))
  codes = _BITS.decode({'values': packed}, n, None)
  return tf.reshape(codes > 0, shape)


def _top_k_mask(score: tf.Tensor, k: int) -> tf.Tensor:
  """bool, True at the k largest entries of `score` (same shape)."""
  n = int(np.prod(score.shape))
  if k >= n:
    return tf.ones(score.shape, tf.bool)
  idx = tf.math.top_k(tf.reshape(score, [-1]), k=k, sorted=False).indices
  hit = tf.scatter_nd(idx[:, None], tf.ones([k], tf.int32), [n])
  return tf.reshape(hit > 0, score.shape)


def _masked_score(value: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
  # Magnitudes are >= 0, so a masked entry (-1) ranks below every kept one.
  return tf.where(mask, value, -tf.ones_like(value))


def _kept_ids(mask: tf.Tensor, k: int) -> tf.Tensor:
  """int32[k] sorted indices of the True entries of a 1-D mask of k."""
  return tf.ensure_shape(
      tf.cast(tf.reshape(tf.where(mask), [-1]), tf.int32), [k])


@dataclasses.dataclass(frozen=True)
class Report:
  """Zeros of the covered weights (`sparsity_report`), per layer and all."""
  zeros: dict
  sizes: dict

  @property
  def sparsity(self) -> float:
    return sum(self.zeros.values()) / max(1, sum(self.sizes.values()))

  def per_layer(self) -> dict:
    return {l: self.zeros[l] / self.sizes[l] for l in self.sizes}


class Layout(abc.ABC):
  """How one run's global masks cover and cut the model (module doc).

  `masks` below is the list of bool mask tensors (`mask_shapes`); a
  `sparsity` argument is a phase's sparsity and fixes its static shapes.
  """

  def __init__(self, model: tf.keras.Model, layers: Sequence[str]):
    self.layers = tuple(layers)
    self.full_shapes = tuple(tuple(w.shape) for w in model.trainable_weights)
    # trainable-weight index -> the layer that owns it
    self._owner = []
    for layer in model.layers:
      for _ in layer.trainable_weights:
        self._owner.append(layer.name)

  @property
  @abc.abstractmethod
  def structure(self) -> str:
    """The `pruning.structure` value."""

  @property
  @abc.abstractmethod
  def mask_shapes(self) -> tuple[tuple[int, ...], ...]:
    """Shape of each global mask (bool)."""

  @abc.abstractmethod
  def kept(self, sparsity: float) -> tuple[int, ...]:
    """Per mask: the True entries a phase of `sparsity` keeps."""

  @abc.abstractmethod
  def update(self, trainable, masks, sparsity: float) -> list[tf.Tensor]:
    """The masks of a phase of `sparsity`, from |trainable| (idempotent)."""

  @abc.abstractmethod
  def coverage(self, masks) -> list[Optional[tf.Tensor]]:
    """Per trainable weight: float32 0/1 of its shape, or None (unmasked)."""

  @abc.abstractmethod
  def compact(self, values, masks, sparsity: float) -> list[tf.Tensor]:
    """Full-shape trainable values -> what crosses the network."""

  @abc.abstractmethod
  def expand(self, compact, masks, sparsity: float) -> list[tf.Tensor]:
    """Inverse of `compact`, zeros at masked coordinates."""

  @abc.abstractmethod
  def client_task(self, task: task_lib.Task,
                  sparsity: float) -> task_lib.Task:
    """The model a client of this phase trains."""

  @abc.abstractmethod
  def client_model_key(self, sparsity: float):
    """Equal for phases whose clients train the same model."""

  @abc.abstractmethod
  def client_weights(self, compact_weights, masks):
    """What the client work starts from (a `ModelWeights` of
    `client_task`), given the received compact weights and masks."""

  @abc.abstractmethod
  def client_update(self, update, client_weights,
                    sparsity: float) -> list[tf.Tensor]:
    """The client's trained update (its model's shapes) -> compact."""

  @abc.abstractmethod
  def covered(self) -> dict[int, str]:
    """{trainable index: layer} of the weights a mask zeroes: the ones the
    achieved sparsity is measured on."""

  # ---- shared ------------------------------------------------------------

  def initial_masks(self) -> list[tf.Tensor]:
    return [tf.ones(s, tf.bool) for s in self.mask_shapes]

  def project(self, values, masks) -> list[tf.Tensor]:
    """Full-shape values with masked coordinates set to exactly zero."""
    return [v if c is None else v * c
            for v, c in zip(values, self.coverage(masks))]

  def mask_message_bytes(self) -> int:
    """Bytes of the packed masks a client receives when the mask changes."""
    return sum(_BITS.output_length(int(np.prod(s))) for s in self.mask_shapes)

  def report(self, weights: Sequence[np.ndarray]) -> Report:
    """Zeros of the covered weights of full-shape trainable `weights`."""
    zeros, sizes = {}, {}
    for i, layer in self.covered().items():
      w = np.asarray(weights[i])
      zeros[layer] = zeros.get(layer, 0) + int(np.sum(w == 0))
      sizes[layer] = sizes.get(layer, 0) + int(w.size)
    return Report(zeros, sizes)

  def sparsity(self, trainable) -> tf.Tensor:
    """float32 fraction of zeros among the covered weights (in a graph)."""
    covered = [trainable[i] for i in sorted(self.covered())]
    zeros = tf.add_n([tf.reduce_sum(tf.cast(tf.equal(w, 0), tf.float32))
                      for w in covered])
    size = sum(int(np.prod(w.shape)) for w in covered)
    return zeros / size


class ElementLayout(Layout):
  """One mask per pruned kernel (`unstructured`, `m_by_n`, `block`)."""

  def __init__(self, model: tf.keras.Model, layers: Sequence[str],
               structure: str, m_by_n: tuple[int, int] = (2, 4),
               block: tuple[int, int] = (1, 1)):
    super().__init__(model, layers)
    if structure not in ('unstructured', 'm_by_n', 'block'):
      raise ValueError(f'not an element structure: {structure!r}')
    self._structure = structure
    self._m_by_n = tuple(m_by_n)
    self._block = tuple(block) if structure == 'block' else (1, 1)
    by_layer = {l.name: l for l in model.layers}
    kernels = {id(by_layer[n].kernel): n for n in self.layers}
    self.kernel_index = tuple(i for i, w in enumerate(model.trainable_weights)
                              if id(w) in kernels)
    self._shapes = tuple(self.full_shapes[i] for i in self.kernel_index)
    self._roles = self._non_trainable_roles(self.wrap(model))

  @property
  def structure(self) -> str:
    return self._structure

  @property
  def mask_shapes(self):
    return self._shapes

  def kept(self, sparsity):
    if sparsity == 0.0:
      return tuple(int(np.prod(s)) for s in self._shapes)
    if self._structure == 'm_by_n':
      m, n = self._m_by_n
      return tuple(int(np.prod(s)) // n * (n - m) for s in self._shapes)
    r, c = self._block
    return tuple(kept_count(int(np.prod(s)) // (r * c), sparsity) * r * c
                 for s in self._shapes)

  def _update_one(self, w, mask, sparsity, k):
    if self._structure == 'm_by_n':
      return self._m_by_n_mask(w, mask)
    r, c = self._block
    if (r, c) == (1, 1):
      return _top_k_mask(_masked_score(tf.abs(w), mask), k)
    rows, cols = w.shape
    pooled = tf.reduce_mean(
        tf.reshape(tf.abs(w), [rows // r, r, cols // c, c]), axis=[1, 3])
    blocks = _top_k_mask(_masked_score(pooled, mask[::r, ::c]), k // (r * c))
    return tf.repeat(tf.repeat(blocks, r, axis=0), c, axis=1)

  def _m_by_n_mask(self, w, mask):
    # pylint: disable=g-import-not-at-top
    from tensorflow_model_optimization.python.core.sparsity.keras import (
        pruning_utils)
    # pylint: enable=g-import-not-at-top
    m, n = self._m_by_n
    # tfmot's TFLite layout: groups of N along the input channels.
    score = pruning_utils.weights_rearrange(_masked_score(tf.abs(w), mask))
    rows, width = score.shape
    groups = tf.reshape(score, [rows, width // n, n])
    top = tf.math.top_k(groups, k=n - m, sorted=False).indices
    keep = tf.reduce_sum(tf.one_hot(top, n, dtype=tf.float32), axis=-2)
    keep = tf.reshape(keep, [rows, width])
    return pruning_utils.m_by_n_sparsity_mask_prepare(keep, w.shape) > 0

  def update(self, trainable, masks, sparsity):
    out = []
    for i, mask, k in zip(self.kernel_index, masks, self.kept(sparsity)):
      mask = tf.convert_to_tensor(mask)
      if k == int(np.prod(mask.shape)):
        out.append(mask)
        continue
      current = tf.reduce_sum(tf.cast(mask, tf.int32))
      w = tf.convert_to_tensor(trainable[i])
      out.append(tf.cond(
          tf.equal(current, k), lambda m=mask: m,
          lambda w=w, m=mask, k=k: self._update_one(w, m, sparsity, k)))
    return out

  def coverage(self, masks):
    out = [None] * len(self.full_shapes)
    for i, mask in zip(self.kernel_index, masks):
      out[i] = tf.cast(mask, tf.float32)
    return out

  def compact(self, values, masks, sparsity):
    out = list(values)
    for i, mask, k in zip(self.kernel_index, masks, self.kept(sparsity)):
      kept = tf.boolean_mask(tf.reshape(values[i], [-1]),
                             tf.reshape(mask, [-1]))
      out[i] = tf.ensure_shape(kept, [k])
    return out

  def expand(self, compact, masks, sparsity):
    out = list(compact)
    for i, mask in zip(self.kernel_index, masks):
      shape = self.full_shapes[i]
      where = tf.where(tf.reshape(mask, [-1]))
      out[i] = tf.reshape(
          tf.scatter_nd(where, compact[i], [int(np.prod(shape))]), shape)
    return out

  def wrap(self, model: tf.keras.Model) -> tf.keras.Model:
    """`model` with tfmot's `prune_low_magnitude` on the pruned layers.

    tfmot's own mask updates are switched off (a schedule that never
    fires): on a client the wrapper only multiplies the kernel by the mask
    variable before every forward pass, and the server decides the mask.
    """
    # pylint: disable=g-import-not-at-top
    import tensorflow_model_optimization as tfmot
    # pylint: enable=g-import-not-at-top
    never = tfmot.sparsity.keras.ConstantSparsity(
        0.0, begin_step=_NEVER, frequency=1)

    def clone(layer):
      fresh = layer.__class__.from_config(layer.get_config())
      if layer.name in self.layers:
        return tfmot.sparsity.keras.prune_low_magnitude(
            fresh, pruning_schedule=never)
      return fresh

    return tf.keras.models.clone_model(model, clone_function=clone)

  def client_task(self, task, sparsity):
    del sparsity  # every phase trains the full-shape model under its mask
    model_fn = task.keras_model_fn
    # FLOPs and parameters stay those of the full model: the wrapped
    # kernels still multiply their zeros.
    return dataclasses.replace(
        task, keras_model_fn=lambda: self.wrap(model_fn()),
        keras_model_builder=None)

  def client_model_key(self, sparsity):
    del sparsity
    return ()

  def _non_trainable_roles(self, client_model) -> list:
    """Per non-trainable weight of the wrapped model: ('mask', j),
    ('threshold',) or ('step',)."""
    roles = {}
    for layer in client_model.layers:
      for weight, mask, threshold in getattr(layer, 'pruning_vars', ()):
        j = self.kernel_index.index(
            [id(w) for w in client_model.trainable_weights].index(id(weight)))
        roles[id(mask)] = ('mask', j)
        roles[id(threshold)] = ('threshold',)
      if hasattr(layer, 'pruning_step'):
        roles[id(layer.pruning_step)] = ('step',)
    out = []
    for w in client_model.non_trainable_weights:
      if id(w) not in roles:
        raise PruningError(f'unexpected non-trainable weight {w.name} in '
                           'the pruned client model')
      out.append(roles[id(w)])
    return out

  def client_weights(self, compact_weights, masks):
    # pylint: disable=g-import-not-at-top
    import tensorflow_federated as tff
    # pylint: enable=g-import-not-at-top
    trainable = self.expand(list(compact_weights.trainable), masks, None)
    non_trainable = []
    for role in self._roles:
      if role[0] == 'mask':
        non_trainable.append(tf.cast(masks[role[1]], tf.float32))
      elif role[0] == 'threshold':
        non_trainable.append(tf.constant(0.0, tf.float32))
      else:  # tfmot asserts the step is >= 1 after its increment
        non_trainable.append(tf.constant(1, tf.int64))
    return tff.learning.models.ModelWeights(trainable, non_trainable)

  def client_update(self, update, client_weights, sparsity):
    masks = [None] * len(self.kernel_index)
    for role, value in zip(self._roles, client_weights.non_trainable):
      if role[0] == 'mask':
        masks[role[1]] = value > 0
    return self.compact(list(update), masks, sparsity)

  def covered(self):
    return {i: self._owner[i] for i in self.kernel_index}


class UnitLayout(Layout):
  """One mask per pruned hidden layer over its units (`units`)."""

  def __init__(self, model: tf.keras.Model, layers: Sequence[str]):
    super().__init__(model, layers)
    self._model_plan = submodel.build_plan(model)
    self._units = dict(zip(self._model_plan.layers, self._model_plan.units))
    by_layer = {l.name: l for l in model.layers}
    ids = [id(w) for w in model.trainable_weights]
    self._kernel = {n: ids.index(id(by_layer[n].kernel)) for n in self.layers}
    self._bias = {n: ids.index(id(by_layer[n].bias)) for n in self.layers
                  if by_layer[n].use_bias}
    self._plans = {}

  @property
  def structure(self) -> str:
    return 'units'

  @property
  def mask_shapes(self):
    return tuple((self._units[n],) for n in self.layers)

  @property
  def units(self) -> dict[str, int]:
    """{pruned layer: its full width}."""
    return {n: self._units[n] for n in self.layers}

  def alive_units(self, trainable: Sequence[np.ndarray]) -> dict[str, int]:
    """{pruned layer: units with a non-zero incoming weight or bias}."""
    out = {}
    for name in self.layers:
      kernel = np.asarray(trainable[self._kernel[name]])
      alive = np.any(kernel != 0, axis=tuple(range(kernel.ndim - 1)))
      if name in self._bias:
        alive |= np.asarray(trainable[self._bias[name]]) != 0
      out[name] = int(alive.sum())
    return out

  def kept(self, sparsity):
    if sparsity == 0.0:
      return tuple(self._units[n] for n in self.layers)
    return tuple(kept_count(self._units[n], sparsity) for n in self.layers)

  def plan(self, sparsity: float) -> submodel.SubmodelPlan:
    """The submodel of a phase: `kept(sparsity)` units of each pruned
    layer (which ones: the masks), every unit of the others."""
    if sparsity not in self._plans:
      kept = dict(zip(self.layers, self.kept(sparsity)))
      self._plans[sparsity] = dataclasses.replace(
          self._model_plan,
          kept=tuple(kept.get(n, u) for n, u in self._units.items()))
    return self._plans[sparsity]

  def _kept_ids(self, masks, sparsity) -> dict:
    kept = dict(zip(self.layers, self.kept(sparsity)))
    out = {}
    for name, units in self._units.items():
      if name in kept:
        out[name] = _kept_ids(masks[self.layers.index(name)], kept[name])
      else:
        out[name] = tf.range(units, dtype=tf.int32)
    return out

  def update(self, trainable, masks, sparsity):
    out = []
    for name, mask, k in zip(self.layers, masks, self.kept(sparsity)):
      mask = tf.convert_to_tensor(mask)
      if k == self._units[name]:
        out.append(mask)
        continue
      kernel = trainable[self._kernel[name]]
      rank = len(kernel.shape)
      score = tf.reduce_sum(tf.square(kernel), axis=list(range(rank - 1)))
      if name in self._bias:
        score += tf.square(trainable[self._bias[name]])
      current = tf.reduce_sum(tf.cast(mask, tf.int32))
      out.append(tf.cond(
          tf.equal(current, k), lambda m=mask: m,
          lambda s=score, m=mask, k=k: _top_k_mask(_masked_score(s, m), k)))
    return out

  def coverage(self, masks):
    # Full-shape 0/1 per weight: outer products of the unit masks of the
    # axes that index it (a Flatten repeats a conv filter's entry).
    by_layer = dict(zip(self.layers, masks))
    out = []
    for axes, shape in zip(self._model_plan.weights,
                           self._model_plan.full_shapes):
      cover = None
      for a in axes:
        if a.layer not in by_layer:
          continue
        m = tf.cast(by_layer[a.layer], tf.float32)
        if a.repeat > 1:
          m = tf.tile(m, [a.repeat])
        view = [1] * len(shape)
        view[a.axis] = shape[a.axis]
        m = tf.reshape(m, view)
        cover = m if cover is None else cover * m
      out.append(None if cover is None else tf.broadcast_to(cover, shape))
    return out

  def compact(self, values, masks, sparsity):
    return self.plan(sparsity).gather(list(values),
                                      self._kept_ids(masks, sparsity))

  def expand(self, compact, masks, sparsity):
    return self.plan(sparsity).scatter(list(compact),
                                       self._kept_ids(masks, sparsity))

  def client_task(self, task, sparsity):
    return task.with_widths(self.plan(sparsity).widths)

  def client_model_key(self, sparsity):
    return self.kept(sparsity)

  def client_weights(self, compact_weights, masks):
    del masks  # the submodel is the compact model itself
    return compact_weights

  def client_update(self, update, client_weights, sparsity):
    del client_weights, sparsity
    return list(update)

  def covered(self):
    # Kernels only (as tfmot measures sparsity): biases start at zero.
    out = {}
    for i, axes in enumerate(self._model_plan.weights):
      if (len(self.full_shapes[i]) > 1 and
          any(a.layer in self.layers for a in axes)):
        out[i] = self._owner[i]
    return out


def build_layout(model: tf.keras.Model, pruning) -> Layout:
  """The layout of `pruning.*` (a `PruningSettings`) for `model`."""
  layers = resolve_layers(model, pruning)
  if pruning.structure == 'units':
    return UnitLayout(model, layers)
  return ElementLayout(
      model, layers, pruning.structure,
      m_by_n=pruning.m_by_n_pair, block=pruning.block_shape)
