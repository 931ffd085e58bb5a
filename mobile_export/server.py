"""The server's side of a round with real devices (eager TensorFlow).

The same pieces as the simulation, outside TFF's runtime: the broadcast is
`StructureCodec.encode` with the distributor's seed [config seed, round],
updates are decoded with `StructureCodec.decode` (the simulation's decoder)
and averaged weighted by examples (TFF's `MeanFactory`), and the server
optimizer is the run's TFF optimizer (`learning.registry.SERVER_OPTIMIZERS`).

With Federated Dropout (a `SubmodelPlan`) it is the dropout process's round
(`learning/dropout_process.py`) instead: the device in slot k of round r
gets the submodel of mask (config seed, r + 1, k) — or mask 0 of the round
with `dropout.mask=per_round` — encoded with that process's broadcast seed;
its submodel update is decoded, scattered into the global shapes and
averaged per coordinate over the example weights of the devices that
trained it; coordinates nobody trained keep their value. (The dropout
process counts rounds from 1, device messages from 0.) A device seeds its
lossy uplink from its update (`prng.update_seed`, the seed travels in the
message) where the simulated dropout process seeds it from the slot: with a
lossy uplink a dropout device round equals the simulated one in
distribution, with a float uplink exactly (tested).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from mobile_export import export_lib
from mobile_export import messages
from mobile_export import trainer as trainer_lib
from tff_compress.dropout import submodel as submodel_lib
from tff_compress.learning import dropout_process
from tff_compress.learning import encoded
from tff_compress.learning import registry


class DeviceRoundServer:
  """Encodes broadcasts, decodes device updates, applies the aggregate."""

  def __init__(self, config, weight_shapes: Sequence[Sequence[int]],
               plan: Optional[submodel_lib.SubmodelPlan] = None,
               *, plan_checked: bool = False):
    """Server of `config`'s run for a global model of `weight_shapes`.

    Args:
      config: The run's config.
      weight_shapes: Shapes of the global model's trainable weights.
      plan: The Federated Dropout plan of the run (see `for_run`).
      plan_checked: `plan` is the run's plan even if None (`for_run`).

    Raises:
      ValueError: a dropout config without its plan, or a plan for other
        shapes.
    """
    has_dropout = (config.dropout.keep != 1.0 or
                   bool(config.dropout.per_layer))
    if plan is None and has_dropout and not plan_checked:
      raise ValueError(
          'dropout.keep/dropout.per_layer: device rounds with Federated '
          'Dropout need the run\'s submodel plan; build the server with '
          'DeviceRoundServer.for_run(config, model)')
    self._config = config
    self.shapes = [tuple(int(d) for d in s) for s in weight_shapes]
    self.plan = plan
    if plan is not None and [tuple(s) for s in plan.full_shapes] != self.shapes:
      raise ValueError(f'the dropout plan is for shapes {plan.full_shapes}, '
                       f'not {self.shapes}')
    # What a device holds: the submodel's shapes under dropout.
    self.device_shapes = (self.shapes if plan is None else
                          [tuple(s) for s in plan.sub_shapes()])
    settings = trainer_lib.TrainerSettings.from_config(config)
    self._settings = settings
    value_type = trainer_lib.model_value_type(self.device_shapes)
    self.broadcast_coder = encoded.StructureCodec(value_type,
                                                  settings.broadcast)
    self.uplink_coder = encoded.StructureCodec(value_type, settings.uplink)
    self._sizes = [int(np.prod(s)) for s in self.device_shapes]
    self._optimizer = registry.SERVER_OPTIMIZERS[config.server.optimizer](
        config)
    self._opt_state = self._optimizer.initialize(
        tuple(tf.TensorSpec(s, tf.float32) for s in self.shapes))

  @classmethod
  def for_run(cls, config, model: tf.keras.Model) -> 'DeviceRoundServer':
    """The server of `config`'s run, whose global model is `model`."""
    plan = export_lib.dropout_plan(config, model)
    return cls(config, [tuple(w.shape) for w in model.trainable_weights],
               plan, plan_checked=True)

  # --- Federated Dropout ---------------------------------------------------

  def _mask_key(self, slot: int) -> int:
    return slot if self._config.dropout.mask == 'per_client' else 0

  def kept(self, round_index: int, slot: int) -> dict:
    """The kept units of the device in `slot` of round `round_index`."""
    return self.plan.kept_indices(submodel_lib.mask_seed(
        self._settings.seed, round_index + 1, self._mask_key(slot)))

  # --- messages --------------------------------------------------------------

  def broadcast(self, weights: Sequence[np.ndarray], round_index: int,
                slot: int = 0) -> bytes:
    """The broadcast message of round `round_index` (0-based) for `slot`.

    Without dropout every slot gets the same message.
    """
    if self.plan is None:
      seed = tf.constant([self._settings.seed, round_index], tf.int64)
      values = [tf.constant(w) for w in weights]
    else:
      seed = dropout_process.submodel_codec_seed(
          self._settings.seed, round_index + 1, self._mask_key(slot),
          dropout_process.BROADCAST_DIRECTION)
      values = self.plan.gather([tf.constant(w) for w in weights],
                                self.kept(round_index, slot))
    if self._settings.broadcast.is_identity:
      payload = [{'raw': np.asarray(w)} for w in values]
    else:
      payload = self.broadcast_coder.encode(values, seed)
    tensors = [{k: np.asarray(v).reshape([-1]) for k, v in p.items()}
               for p in payload]
    return messages.pack(messages.BROADCAST, round_index, seed.numpy(),
                         tensors, self.broadcast_coder.specs(), self._sizes)

  def decode_update(self, blob: bytes) -> tuple[list[np.ndarray], float]:
    """(update tensors in the device's shapes, weight) of one message."""
    msg = messages.unpack(messages.UPDATE, blob, self.uplink_coder.specs(),
                          self._sizes)
    tensors = []
    for entries, shape in zip(msg.tensors, self.device_shapes):
      if 'raw' in entries:
        entries = dict(entries, raw=entries['raw'].reshape(shape))
      tensors.append({k: tf.constant(v) for k, v in entries.items()})
    decoded = self.uplink_coder.decode(tensors, tf.constant(msg.seed))
    return [np.asarray(t) for t in tf.nest.flatten(decoded)], msg.weight

  def aggregate(self, blobs: Sequence[bytes], round_index: int = 0,
                slots: Optional[Sequence[int]] = None) -> list[np.ndarray]:
    """The mean update of the devices' messages, in the global shapes.

    Without dropout: the example-weighted mean (TFF's MeanFactory). With
    dropout: per coordinate, the example-weighted mean over the devices
    that trained it (0 where none did); `slots[i]` is the slot `blobs[i]`'s
    broadcast was made for (default: its position), in `round_index`.
    """
    decoded = [self.decode_update(b) for b in blobs]
    if self.plan is None:
      decoded = [(u, w) for u, w in decoded if w > 0]
      total = sum(w for _, w in decoded)
      if total <= 0:
        return [np.zeros(s, np.float32) for s in self.shapes]
      return [sum(np.float32(w) * u[i] for u, w in decoded) / np.float32(total)
              for i in range(len(self.shapes))]
    slots = range(len(blobs)) if slots is None else slots
    if len(slots) != len(blobs):
      raise ValueError(f'{len(blobs)} updates but {len(slots)} slots')
    total = [tf.zeros(s, tf.float32) for s in self.shapes]
    counts = [tf.zeros(s, tf.float32) for s in self.shapes]
    for (update, weight), slot in zip(decoded, slots):
      kept = self.kept(round_index, slot)
      full = self.plan.scatter([tf.constant(u) for u in update], kept)
      cover = self.plan.coverage(kept)
      w = tf.constant(weight, tf.float32)
      total = [t + w * u for t, u in zip(total, full)]
      counts = [c + w * v for c, v in zip(counts, cover)]
    return [np.asarray(tf.math.divide_no_nan(t, c))
            for t, c in zip(total, counts)]

  def apply(self, weights: Sequence[np.ndarray],
            mean_update: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The server optimizer step with the mean update as the gradient."""
    self._opt_state, new = self._optimizer.next(
        self._opt_state, tuple(tf.constant(w) for w in weights),
        tuple(tf.constant(u) for u in mean_update))
    return [np.asarray(w) for w in new]

