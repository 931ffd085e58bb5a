"""The server's side of a round with real devices (eager TensorFlow).

The same pieces as the simulation, outside TFF's runtime: the broadcast is
`StructureCodec.encode` with the distributor's seed [config seed, round],
updates are decoded with `StructureCodec.decode` (the simulation's decoder)
and averaged weighted by examples (TFF's `MeanFactory`), and the server
optimizer is the run's TFF optimizer (`learning.registry.SERVER_OPTIMIZERS`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from mobile_export import messages
from mobile_export import trainer as trainer_lib
from tff_compress.learning import encoded
from tff_compress.learning import registry


class DeviceRoundServer:
  """Encodes broadcasts, decodes device updates, applies the aggregate."""

  def __init__(self, config, weight_shapes: Sequence[Sequence[int]]):
    if config.dropout.keep != 1.0 or config.dropout.per_layer:
      # Devices would send submodel-shaped updates that need the
      # simulation's per-client mask, gather and count-average scatter.
      raise ValueError(
          'device rounds with Federated Dropout are not supported yet '
          '(dropout.keep/dropout.per_layer): the exported trainer has the '
          'submodel shapes, but this server only sends and averages full '
          'models')
    self._config = config
    self.shapes = [tuple(int(d) for d in s) for s in weight_shapes]
    settings = trainer_lib.TrainerSettings.from_config(config)
    self._settings = settings
    value_type = trainer_lib.model_value_type(self.shapes)
    self.broadcast_coder = encoded.StructureCodec(value_type,
                                                  settings.broadcast)
    self.uplink_coder = encoded.StructureCodec(value_type, settings.uplink)
    self._sizes = [int(np.prod(s)) for s in self.shapes]
    self._optimizer = registry.SERVER_OPTIMIZERS[config.server.optimizer](
        config)
    self._opt_state = self._optimizer.initialize(
        tuple(tf.TensorSpec(s, tf.float32) for s in self.shapes))

  def broadcast(self, weights: Sequence[np.ndarray], round_index: int
                ) -> bytes:
    """The broadcast message of round `round_index` (0-based)."""
    seed = tf.constant([self._settings.seed, round_index], tf.int64)
    if self._settings.broadcast.is_identity:
      payload = [{'raw': np.asarray(w)} for w in weights]
    else:
      payload = self.broadcast_coder.encode(
          [tf.constant(w) for w in weights], seed)
    tensors = [{k: np.asarray(v).reshape([-1]) for k, v in p.items()}
               for p in payload]
    return messages.pack(messages.BROADCAST, round_index, seed.numpy(),
                         tensors, self.broadcast_coder.specs(), self._sizes)

  def decode_update(self, blob: bytes) -> tuple[list[np.ndarray], float]:
    """(update tensors, weight) of one device message."""
    msg = messages.unpack(messages.UPDATE, blob, self.uplink_coder.specs(),
                          self._sizes)
    tensors = []
    for entries, shape in zip(msg.tensors, self.shapes):
      if 'raw' in entries:
        entries = dict(entries, raw=entries['raw'].reshape(shape))
      tensors.append({k: tf.constant(v) for k, v in entries.items()})
    decoded = self.uplink_coder.decode(tensors, tf.constant(msg.seed))
    return [np.asarray(t) for t in tf.nest.flatten(decoded)], msg.weight

  def aggregate(self, blobs: Sequence[bytes]) -> list[np.ndarray]:
    """Example-weighted mean of the decoded updates (TFF's MeanFactory)."""
    decoded = [(u, w) for u, w in map(self.decode_update, blobs) if w > 0]
    total = sum(w for _, w in decoded)
    if total <= 0:
      return [np.zeros(s, np.float32) for s in self.shapes]
    return [sum(np.float32(w) * u[i] for u, w in decoded) / np.float32(total)
            for i in range(len(self.shapes))]

  def apply(self, weights: Sequence[np.ndarray],
            mean_update: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The server optimizer step with the mean update as the gradient."""
    self._opt_state, new = self._optimizer.next(
        self._opt_state, tuple(tf.constant(w) for w in weights),
        tuple(tf.constant(u) for u in mean_update))
    return [np.asarray(w) for w in new]
