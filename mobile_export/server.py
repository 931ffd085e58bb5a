"""The server's side of a round with real devices: the run's own aggregation.

A device round is the simulated round with the clients replaced by phones:

* **Broadcast.** The message for slot k of round r is the simulation's:
  `StructureCodec.encode` with the encoded distributor's seed [config seed,
  r], or, under Federated Dropout, the slot's submodel
  (`dropout.slicing.MaskSlicing`, mask of (config seed, r + 1, mask key))
  with the keyed distributor's seed. (The keyed pieces count rounds from 1,
  device messages from 0.)
* **Updates are hostile until checked.** Each update message is parsed
  against the expected layout (`messages.unpack`: any defect is a
  `PayloadError`), must name this round, carry a finite weight in
  [0, `max_weight`], come from a slot of this round, once; otherwise the
  device is *rejected*, with the reason, and left out.
* **Aggregation is the simulation's TFF aggregation process**, built by the
  same registry (`fedavg.registry.build_aggregator`) from the run's
  settings, executed in the TFF runtime on the decoded updates: zeroing of
  non-finite or over-`dp.zeroing_norm` updates (always on here: the server
  cannot trust a phone), DP-FedAvg's clip and noise, the example-weighted
  mean or Federated Dropout's per-coordinate scatter mean. The phone has
  done the uplink encoding, so the server decodes with the simulation's
  decoder (`StructureCodec.decode`) and the process runs with the uplink
  codec as the identity — under DP with a fixed clip the clip then applies
  to the decoded update, on the server. Then the run's server optimizer
  (TFF's `build_apply_optimizer_finalizer`).

The server's state between rounds (global weights, aggregator and optimizer
state, round) is a `ServerState`; `device_round.py` checkpoints it in the
run directory. A device seeds its lossy uplink from its update
(`prng.update_seed`, the seed travels in the message), as the simulation's
encoded uplink does.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from mobile_export import messages
from mobile_export import trainer as trainer_lib
from tff_compress.dropout import slicing as dropout_slicing
from tff_compress.dropout import submodel as submodel_lib
from tff_compress.encoders import settings as codec_settings
from tff_compress.encoders import structure
from tff_compress.fedavg import registry
from tff_compress.fedavg import settings as fedavg_settings
from tff_compress.learning import aggregators
from tff_compress.learning import distributors

ACCEPTED, ZEROED, REJECTED = 'accepted', 'zeroed', 'rejected'
# A weight is the examples a device trained on this round (epochs x local
# examples). Larger claims are refused rather than trusted.
DEFAULT_MAX_WEIGHT = 1e6


class DeviceUpdateError(ValueError):
  """A device's update message cannot be used (the message says why)."""


@dataclasses.dataclass(frozen=True)
class Outcome:
  """What happened to one device's update."""

  slot: int
  status: str           # ACCEPTED, ZEROED or REJECTED
  reason: str = ''      # why it was zeroed or rejected
  weight: float = 0.0
  bytes: int = 0

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class ServerState:
  """The device-round server's state between rounds.

  Attributes:
    round: The next round index (0-based; device messages carry it).
    weights: Global trainable weights, Keras order.
    aggregator: The TFF aggregation process's state.
    finalizer: The server optimizer's state.
  """

  round: int
  weights: list
  aggregator: Any
  finalizer: Any

  def to_structure(self) -> collections.OrderedDict:
    return collections.OrderedDict(
        round=np.int64(self.round), weights=list(self.weights),
        aggregator=self.aggregator, finalizer=self.finalizer)

  @classmethod
  def from_structure(cls, s) -> 'ServerState':
    return cls(int(s['round']), [np.asarray(w) for w in s['weights']],
               s['aggregator'], s['finalizer'])


@dataclasses.dataclass
class RoundResult:
  """`DeviceRoundServer.run_round`'s result.

  Attributes:
    state: The state after the round (weights unchanged if nobody was
      accepted).
    outcomes: One per update received, by slot.
    mean_update: The aggregated update the optimizer applied (global
      shapes), None if nobody was accepted.
    measurements: The TFF aggregation process's measurements.
  """

  state: ServerState
  outcomes: list
  mean_update: Optional[list]
  measurements: Any


class DeviceRoundServer:
  """Encodes broadcasts, checks and decodes device updates, and runs the
  run's aggregation and server optimizer on them."""

  def __init__(self, settings, model: tf.keras.Model, *,
               max_weight: float = DEFAULT_MAX_WEIGHT):
    """The server of a run.

    Args:
      settings: The run's settings (`config_lib.Settings`).
      model: The run's global Keras model (architecture; its weights are
        not used).
      max_weight: The largest aggregation weight a device may claim.

    Raises:
      submodel_lib.SubmodelError: `dropout.*` does not fit `model`.
    """
    self._ts = fedavg_settings.TrainingSettings.of(settings)
    self._seed = self._ts.seed
    self.max_weight = float(max_weight)
    self.shapes = [tuple(int(d) for d in w.shape)
                   for w in model.trainable_weights]
    self.plan = submodel_lib.plan_for(model, self._ts.dropout)
    self.slicing = None
    if self.plan is not None:
      self.slicing = dropout_slicing.MaskSlicing(
          self.plan, self._seed, self._ts.dropout.per_client_masks,
          self._ts.clients_per_round)
    # What a device holds: the submodel's shapes under dropout.
    self.device_shapes = (self.shapes if self.plan is None else
                          [tuple(s) for s in self.plan.sub_shapes()])
    value_type = trainer_lib.model_value_type(self.device_shapes)
    self.broadcast_coder = structure.StructureCodec(value_type,
                                                    self._ts.broadcast)
    self.uplink_coder = structure.StructureCodec(value_type, self._ts.uplink)
    self._sizes = [int(np.prod(s)) for s in self.device_shapes]
    self._aggregation = registry.build_aggregator(
        dataclasses.replace(self._ts, uplink=codec_settings.UplinkCodec()),
        self.slicing, trainer_lib.model_value_type(self.shapes),
        untrusted=True).create(value_type, tff.TensorType(np.float32))
    weights_type = tff.to_type(tff.learning.models.ModelWeights(
        trainable=list(trainer_lib.model_value_type(self.shapes)),
        non_trainable=[]))
    self._finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
        registry.build_server_optimizer(self._ts.server), weights_type)

  @property
  def clients_per_round(self) -> int:
    return self._ts.clients_per_round

  # --- Federated Dropout ----------------------------------------------------

  def kept(self, round_index: int, slot: int) -> dict:
    """The kept units of the device in `slot` of round `round_index`."""
    return self.slicing.kept(round_index + 1, self.slicing.mask_key(slot))

  # --- state ----------------------------------------------------------------

  def initial_state(self, weights: Sequence[np.ndarray]) -> ServerState:
    """Round 0 from `weights` (needs a TFF execution context)."""
    return ServerState(0, [np.asarray(w, np.float32) for w in weights],
                       self._aggregation.initialize(),
                       self._finalizer.initialize())

  # --- messages -------------------------------------------------------------

  def broadcast(self, weights: Sequence[np.ndarray], round_index: int,
                slot: int = 0) -> bytes:
    """The broadcast message of round `round_index` (0-based) for `slot`.

    Without dropout every slot gets the same message.
    """
    values = [tf.constant(w) for w in weights]
    if self.plan is None:
      seed = distributors.broadcast_seed(self._seed, round_index)
    else:
      key = self.slicing.mask_key(tf.constant(slot, tf.int32))
      seed = self.slicing.codec_seed(round_index + 1, key)
      values = self.slicing.gather(values, round_index + 1, key)
    if self._ts.broadcast.is_identity:
      payload = [{'raw': np.asarray(w)} for w in values]
    else:
      payload = self.broadcast_coder.encode(values, seed)
    tensors = [{k: np.asarray(v).reshape([-1]) for k, v in p.items()}
               for p in payload]
    return messages.pack(messages.BROADCAST, round_index, seed.numpy(),
                         tensors, self.broadcast_coder.specs(), self._sizes)

  def decode_update(self, blob: bytes, round_index: Optional[int] = None
                    ) -> tuple[list[np.ndarray], float]:
    """(update tensors in the device's shapes, weight) of one message.

    Raises:
      DeviceUpdateError: The message is malformed (`PayloadError`), of
        another round, or claims an absurd weight.
    """
    try:
      msg = messages.unpack(messages.UPDATE, blob, self.uplink_coder.specs(),
                            self._sizes)
    except messages.PayloadError as e:
      raise DeviceUpdateError(f'malformed update: {e}') from e
    if round_index is not None and msg.round != round_index:
      raise DeviceUpdateError(
          f'update of round {msg.round}, expected round {round_index}')
    if not 0 <= msg.weight <= self.max_weight:
      raise DeviceUpdateError(
          f'weight {msg.weight:g} outside [0, {self.max_weight:g}]')
    tensors = []
    for entries, shape in zip(msg.tensors, self.device_shapes):
      if 'raw' in entries:
        entries = dict(entries, raw=entries['raw'].reshape(shape))
      tensors.append({k: tf.constant(v) for k, v in entries.items()})
    decoded = self.uplink_coder.decode(tensors, tf.constant(msg.seed))
    return [np.asarray(t) for t in tf.nest.flatten(decoded)], msg.weight

  def _zeroing_reason(self, update: Sequence[np.ndarray],
                      weight: float) -> str:
    """Why the aggregation's zeroing stage drops this update ('' if not);
    the same test (`aggregators.zero_bad_value`), evaluated per device."""
    if weight == 0:
      return 'the device reported a non-finite update (weight 0)'
    _, flag = aggregators.zero_bad_value(
        [tf.constant(u) for u in update], self._ts.dp.zeroing_norm)
    if int(flag):
      if not all(np.isfinite(u).all() for u in update):
        return 'non-finite update'
      return f'update L2 norm above dp.zeroing_norm={self._ts.dp.zeroing_norm:g}'
    return ''

  def run_round(self, state: ServerState,
                updates: Mapping[int, bytes]) -> RoundResult:
    """Checks, decodes and aggregates one round's updates (TFF context).

    Args:
      state: The server state (its `round` is the round being closed).
      updates: Slot -> the update message the device of that slot sent.

    Returns:
      The new state (round + 1), per-device outcomes and the aggregation's
      measurements. Nobody accepted: the model is unchanged.
    """
    outcomes, values, weights, slots = [], [], [], []
    for slot in sorted(updates):
      blob = updates[slot]
      size = len(blob) if isinstance(blob, (bytes, bytearray)) else 0
      if not (isinstance(slot, (int, np.integer)) and
              0 <= slot < self.clients_per_round):
        outcomes.append(Outcome(int(slot), REJECTED, (
            f'slot {slot} outside 0..{self.clients_per_round - 1}'),
                                bytes=size))
        continue
      try:
        update, weight = self.decode_update(blob, state.round)
      except DeviceUpdateError as e:
        outcomes.append(Outcome(int(slot), REJECTED, str(e), bytes=size))
        continue
      reason = self._zeroing_reason(update, weight)
      outcomes.append(Outcome(int(slot), ZEROED if reason else ACCEPTED,
                              reason, weight, size))
      values.append(update)
      weights.append(np.float32(weight))
      slots.append(np.array([slot], np.int32))
    if not values:
      return RoundResult(dataclasses.replace(state, round=state.round + 1),
                         outcomes, None, None)
    args = [state.aggregator, values, weights]
    if self.slicing is not None:
      args.append(slots)
    out = self._aggregation.next(*args)
    zeroed = sum(o.status == ZEROED for o in outcomes)
    if int(out.measurements['zeroed']) != zeroed:
      raise AssertionError(
          f'the aggregation zeroed {int(out.measurements["zeroed"])} updates,'
          f' the per-device check {zeroed}')
    mean_update = [np.asarray(u) for u in out.result]
    fin = self._finalizer.next(
        state.finalizer,
        tff.learning.models.ModelWeights(trainable=list(state.weights),
                                         non_trainable=[]),
        mean_update)
    new_weights = [np.asarray(w) for w in fin.result.trainable]
    return RoundResult(
        ServerState(state.round + 1, new_weights, out.state, fin.state),
        outcomes, mean_update, out.measurements)
