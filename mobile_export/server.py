"""The server's side of a round with real devices: the run's own aggregation.

A device round is the simulated round with the clients replaced by phones:

* **Broadcast.** The message for slot k of round r is the simulation's:
  `StructureCodec.encode` with the encoded distributor's seed [config seed,
  r], or, under Federated Dropout, the slot's submodel
  (`dropout.slicing.MaskSlicing`, mask of (config seed, r + 1, mask key))
  with the keyed distributor's seed. (The keyed pieces count rounds from 1,
  device messages from 0.)
* **Device tiers** (`tiers.mix`). Slot k of round r stands for the k-th
  client the simulation samples in round r + 1
  (`program.sampling.sample_clients`); that client's tier
  (`tiers.assignment.assign_tiers`) decides the slot's *layout*
  (`SlotLayout`): the tier's slice of the global model (`tiers.slicing`:
  the first ⌈p n⌉ units, or the round's mask for the slot's key), encoded
  with the tier's codec seed, and the shapes its update must have. The
  device runs that tier's exported trainer (`tflite/tier_<name>/`).
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
  (TFF's `build_apply_optimizer_finalizer`). With device tiers, each tier's
  updates go through that tier's partial-sum aggregator
  (`build_aggregator(partial=True)`, as in the tier's simulated pass) and
  the tiered process's own server step (`tiers.process.build_server_step`:
  the tiers' sums added, DP noise once, per-coordinate division, server
  optimizer). Every aggregator runs every round, with no client if need
  be, so its round counter (which picks random slices) follows the rounds.

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
from tff_compress.learning import keyed
from tff_compress.privacy import factories as dp_factories
from tff_compress.program import sampling
from tff_compress.tiers import assignment as tier_assignment
from tff_compress.tiers import process as tier_process
from tff_compress.tiers import slicing as tier_slicing

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
  tier: Optional[str] = None  # the slot's tier (None: no tiers/slot)

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class ServerState:
  """The device-round server's state between rounds.

  Attributes:
    round: The next round index (0-based; device messages carry it).
    weights: Global trainable weights, Keras order.
    aggregator: The TFF aggregation process's state (device tiers: a tuple,
      one state per tier).
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


@dataclasses.dataclass(frozen=True)
class SlotLayout:
  """What the device of a slot holds, receives and must send back.

  Attributes:
    tier: The tier's name (None without device tiers).
    folder: The export folder of the trainer the device runs, relative to
      the export directory ('.' or `tier_<name>`, `export_lib.export`).
    shapes: Its model's trainable shapes, Keras order.
    slicing: Which part of the global model it trains (None: all of it).
    broadcast_coder: The broadcast codec on `shapes`.
    uplink_coder: The uplink codec on `shapes`.
  """

  tier: Optional[str]
  folder: str
  shapes: tuple
  slicing: Optional[keyed.Slicing]
  broadcast_coder: structure.StructureCodec
  uplink_coder: structure.StructureCodec

  @property
  def sizes(self) -> list[int]:
    """Elements per tensor (the messages' layout)."""
    return [int(np.prod(s)) for s in self.shapes]

  @property
  def label(self) -> str:
    """How reasons name it: "tier 'low' (N values)", N floats per update."""
    return (f'tier {self.tier!r} ({sum(self.sizes):,} values)' if self.tier
            else f'the model ({sum(self.sizes):,} values)')


@dataclasses.dataclass
class RoundResult:
  """`DeviceRoundServer.run_round`'s result.

  Attributes:
    state: The state after the round (weights unchanged if nobody was
      accepted).
    outcomes: One per update received, by slot.
    mean_update: The aggregated update the optimizer applied (global
      shapes), None if nobody was accepted.
    measurements: The TFF aggregation process's measurements (device
      tiers: tier name -> that tier's aggregator's measurements).
  """

  state: ServerState
  outcomes: list
  mean_update: Optional[list]
  measurements: Any


class DeviceRoundServer:
  """Encodes broadcasts, checks and decodes device updates, and runs the
  run's aggregation and server optimizer on them."""

  def __init__(self, settings, model: tf.keras.Model, *,
               max_weight: float = DEFAULT_MAX_WEIGHT,
               num_clients: Optional[int] = None):
    """The server of a run.

    Args:
      settings: The run's settings (`config_lib.Settings`).
      model: The run's global Keras model (architecture; its weights are
        not used).
      max_weight: The largest aggregation weight a device may claim.
      num_clients: N, the clients the simulation samples from: which
        client each slot stands for (`slot_clients`). Required with device
        tiers (a slot's tier is its client's).

    Raises:
      submodel_lib.SubmodelError: `dropout.*` or a tier does not fit
        `model`.
      ValueError: Device tiers without `num_clients`.
    """
    self._ts = fedavg_settings.TrainingSettings.of(settings)
    self._seed = self._ts.seed
    self._num_clients = None if num_clients is None else int(num_clients)
    self.max_weight = float(max_weight)
    self.shapes = [tuple(int(d) for d in w.shape)
                   for w in model.trainable_weights]
    global_type = trainer_lib.model_value_type(self.shapes)
    # The phone has encoded its update: the server's aggregation decodes
    # nothing (uplink = identity) and never trusts it (zeroing on).
    device_ts = dataclasses.replace(self._ts,
                                    uplink=codec_settings.UplinkCodec())
    tiers = self._ts.tiers
    self.tiered = tiers.active
    self.plan = None
    self.slicing = None
    self.assignment = None
    if self.tiered:
      if num_clients is None:
        raise ValueError('a device-tier run needs num_clients: a slot\'s '
                         'tier is the tier of the client it stands for')
      self.assignment = tier_assignment.assign_tiers(
          self._num_clients, [t.share for t in tiers.tiers], self._seed)
      self.layouts = []
      for index, tier in enumerate(tiers.tiers):
        plan = tier_slicing.tier_plan(model, tier)
        self.layouts.append(self._make_layout(
            tier.name, f'tier_{tier.name}', plan.sub_shapes(),
            tier_slicing.build_slicing(tiers.slicing, plan, self._seed,
                                       index, self._ts.clients_per_round)))
    else:
      self.plan = submodel_lib.plan_for(model, self._ts.dropout)
      if self.plan is not None:
        self.slicing = dropout_slicing.MaskSlicing(
            self.plan, self._seed, self._ts.dropout.per_client_masks,
            self._ts.clients_per_round)
      # What a device holds: the submodel's shapes under dropout.
      self.layouts = [self._make_layout(
          None, '.', self.shapes if self.plan is None
          else self.plan.sub_shapes(), self.slicing)]
    self.layouts = tuple(self.layouts)
    # Device tiers: each tier's partial sums, as its simulated pass makes
    # them; otherwise the run's mean.
    self._aggregations = tuple(
        registry.build_aggregator(
            device_ts, layout.slicing, global_type, untrusted=True,
            partial=self.tiered).create(
                trainer_lib.model_value_type(layout.shapes),
                tff.TensorType(np.float32))
        for layout in self.layouts)
    weights_type = tff.to_type(tff.learning.models.ModelWeights(
        trainable=list(global_type), non_trainable=[]))
    self._finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
        registry.build_server_optimizer(self._ts.server), weights_type)
    self._server_step = None
    if self.tiered:
      self._server_step = tier_process.build_server_step(
          weights_type, [layout.slicing for layout in self.layouts],
          [a.next.type_signature.result.result.member
           for a in self._aggregations],
          self._finalizer,
          dp_factories.gaussian_noise(self._ts.dp)
          if self._ts.dp.user_level else None)

  def _make_layout(self, tier: Optional[str], folder: str, shapes,
                   slicing) -> SlotLayout:
    shapes = tuple(tuple(int(d) for d in s) for s in shapes)
    value_type = trainer_lib.model_value_type(shapes)
    return SlotLayout(
        tier, folder, shapes, slicing,
        structure.StructureCodec(value_type, self._ts.broadcast),
        structure.StructureCodec(value_type, self._ts.uplink))

  @property
  def clients_per_round(self) -> int:
    return self._ts.clients_per_round

  # --- slots ----------------------------------------------------------------

  def slot_clients(self, round_index: int) -> np.ndarray:
    """The client index each slot of round `round_index` stands for: the
    simulation's sample of its round `round_index` + 1."""
    if self._num_clients is None:
      raise ValueError('the server was built without num_clients')
    return sampling.sample_clients(self._num_clients, self.clients_per_round,
                                   self._seed, round_index + 1)

  def slot_tier(self, round_index: int, slot: int) -> Optional[int]:
    """The tier index of `slot` in round `round_index` (None: no tiers)."""
    if not self.tiered:
      return None
    return int(self.assignment[self.slot_clients(round_index)[slot]])

  def layout(self, round_index: int, slot: int) -> SlotLayout:
    """What the device of `slot` in round `round_index` holds and sends."""
    tier = self.slot_tier(round_index, slot)
    return self.layouts[0 if tier is None else tier]

  def _single(self) -> SlotLayout:
    if self.tiered:
      raise ValueError('a device-tier run has one layout per tier: use '
                       'layout(round_index, slot)')
    return self.layouts[0]

  @property
  def device_shapes(self) -> tuple:
    """What every device holds (the submodel's shapes under dropout)."""
    return self._single().shapes

  @property
  def broadcast_coder(self) -> structure.StructureCodec:
    return self._single().broadcast_coder

  @property
  def uplink_coder(self) -> structure.StructureCodec:
    return self._single().uplink_coder

  def kept(self, round_index: int, slot: int) -> dict:
    """The kept units of the device in `slot` of round `round_index`."""
    slicing = self.layout(round_index, slot).slicing
    if slicing is None:
      raise ValueError('the devices of this run train the whole model')
    return slicing.kept(round_index + 1, slicing.mask_key(slot))

  # --- state ----------------------------------------------------------------

  def initial_state(self, weights: Sequence[np.ndarray]) -> ServerState:
    """Round 0 from `weights` (needs a TFF execution context)."""
    states = tuple(a.initialize() for a in self._aggregations)
    return ServerState(0, [np.asarray(w, np.float32) for w in weights],
                       states if self.tiered else states[0],
                       self._finalizer.initialize())

  # --- messages -------------------------------------------------------------

  def broadcast(self, weights: Sequence[np.ndarray], round_index: int,
                slot: int = 0) -> bytes:
    """The broadcast message of round `round_index` (0-based) for `slot`.

    Without dropout or tiers every slot gets the same message.
    """
    layout = self.layout(round_index, slot)
    values = [tf.constant(w) for w in weights]
    if layout.slicing is None:
      seed = distributors.broadcast_seed(self._seed, round_index)
    else:
      key = layout.slicing.mask_key(tf.constant(slot, tf.int32))
      seed = layout.slicing.codec_seed(round_index + 1, key)
      values = layout.slicing.gather(values, round_index + 1, key)
    if self._ts.broadcast.is_identity:
      payload = [{'raw': np.asarray(w)} for w in values]
    else:
      payload = layout.broadcast_coder.encode(values, seed)
    tensors = [{k: np.asarray(v).reshape([-1]) for k, v in p.items()}
               for p in payload]
    return messages.pack(messages.BROADCAST, round_index, seed.numpy(),
                         tensors, layout.broadcast_coder.specs(),
                         layout.sizes)

  def decode_update(self, blob: bytes, round_index: Optional[int] = None,
                    slot: int = 0) -> tuple[list[np.ndarray], float]:
    """(update tensors in the device's shapes, weight) of one message.

    Args:
      blob: The update message.
      round_index: The round it must name (None: any; not with tiers,
        where the round and slot give the layout).
      slot: The slot it came from (its tier's layout).

    Raises:
      DeviceUpdateError: The message is malformed (`PayloadError`; with
        tiers, one laid out for another tier says so), of another round,
        or claims an absurd weight.
    """
    if self.tiered and round_index is None:
      raise ValueError('with device tiers the round and slot give the '
                       'update\'s layout: pass round_index')
    layout = (self.layout(round_index, slot) if self.tiered
              else self.layouts[0])
    try:
      msg = messages.unpack(messages.UPDATE, blob,
                            layout.uplink_coder.specs(), layout.sizes)
    except messages.PayloadError as e:
      raise DeviceUpdateError(
          self._malformed(blob, layout, round_index, slot, e)) from e
    if round_index is not None and msg.round != round_index:
      raise DeviceUpdateError(
          f'update of round {msg.round}, expected round {round_index}')
    if not 0 <= msg.weight <= self.max_weight:
      raise DeviceUpdateError(
          f'weight {msg.weight:g} outside [0, {self.max_weight:g}]')
    tensors = []
    for entries, shape in zip(msg.tensors, layout.shapes):
      if 'raw' in entries:
        entries = dict(entries, raw=entries['raw'].reshape(shape))
      tensors.append({k: tf.constant(v) for k, v in entries.items()})
    decoded = layout.uplink_coder.decode(tensors, tf.constant(msg.seed))
    return [np.asarray(t) for t in tf.nest.flatten(decoded)], msg.weight

  def _malformed(self, blob, layout: SlotLayout, round_index, slot: int,
                 error: messages.PayloadError) -> str:
    """Why an update does not parse; names the tier it was laid out for
    when it is another tier's (a phone running the wrong trainer)."""
    if not self.tiered:
      return f'malformed update: {error}'
    for other in self.layouts:
      if other is layout:
        continue
      try:
        messages.unpack(messages.UPDATE, blob, other.uplink_coder.specs(),
                        other.sizes)
      except messages.PayloadError:
        continue
      return (f'update laid out for {other.label}, but slot {slot} of round '
              f'{round_index} is {layout.label}')
    return f'malformed update for {layout.label}: {error}'

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
      measurements. Nobody accepted: the model and the optimizer state are
      unchanged (the aggregators still advance their round).
    """
    outcomes = []
    # Per layout (one, or one per tier): the updates that enter it.
    values = [[] for _ in self.layouts]
    weights = [[] for _ in self.layouts]
    slots = [[] for _ in self.layouts]
    for slot in sorted(updates):
      blob = updates[slot]
      size = len(blob) if isinstance(blob, (bytes, bytearray)) else 0
      if not (isinstance(slot, (int, np.integer)) and
              0 <= slot < self.clients_per_round):
        outcomes.append(Outcome(int(slot), REJECTED, (
            f'slot {slot} outside 0..{self.clients_per_round - 1}'),
                                bytes=size))
        continue
      tier = self.slot_tier(state.round, slot)
      t = 0 if tier is None else tier
      name = self.layouts[t].tier
      try:
        update, weight = self.decode_update(blob, state.round, slot)
      except DeviceUpdateError as e:
        outcomes.append(Outcome(int(slot), REJECTED, str(e), bytes=size,
                                tier=name))
        continue
      reason = self._zeroing_reason(update, weight)
      outcomes.append(Outcome(int(slot), ZEROED if reason else ACCEPTED,
                              reason, weight, size, name))
      values[t].append(update)
      weights[t].append(np.float32(weight))
      slots[t].append(np.array([slot], np.int32))
    aggregator_states = (state.aggregator if self.tiered
                         else (state.aggregator,))
    # Every aggregator runs, with no client if need be: its round counter
    # picks the round's random slices and must follow the rounds.
    outs = []
    for t, aggregation in enumerate(self._aggregations):
      args = [aggregator_states[t], values[t], weights[t]]
      if self.layouts[t].slicing is not None:
        args.append(slots[t])
      outs.append(aggregation.next(*args))
    zeroed = sum(o.status == ZEROED for o in outcomes)
    counted = sum(int(o.measurements['zeroed']) for o in outs)
    if counted != zeroed:
      raise AssertionError(f'the aggregation zeroed {counted} updates, the '
                           f'per-device check {zeroed}')
    new_aggregator = (tuple(o.state for o in outs) if self.tiered
                      else outs[0].state)
    measurements = (collections.OrderedDict(
        (layout.tier, o.measurements)
        for layout, o in zip(self.layouts, outs))
                    if self.tiered else outs[0].measurements)
    if not any(values):
      return RoundResult(
          dataclasses.replace(state, round=state.round + 1,
                              aggregator=new_aggregator),
          outcomes, None, measurements)
    global_weights = tff.learning.models.ModelWeights(
        trainable=list(state.weights), non_trainable=[])
    if self.tiered:
      step = self._server_step(global_weights, state.finalizer,
                               tuple(o.result for o in outs))
      mean_update = [np.asarray(u) for u in step['mean']]
      new_weights = step['weights'].trainable
      finalizer_state = step['finalizer']
    else:
      mean_update = [np.asarray(u) for u in outs[0].result]
      fin = self._finalizer.next(state.finalizer, global_weights,
                                 mean_update)
      new_weights, finalizer_state = fin.result.trainable, fin.state
    return RoundResult(
        ServerState(state.round + 1, [np.asarray(w) for w in new_weights],
                    new_aggregator, finalizer_state),
        outcomes, mean_update, measurements)
