"""Federated Dropout (Caldas et al. 2018) as a TFF learning process.

Per round, with K clients and a `SubmodelPlan` (see `tff_compress.dropout`):

1. **Select** — each client holds its slot 0..K-1 in the round; its mask
   key is the slot (`dropout.mask=per_client`) or 0 (`per_round`).
   `tff.federated_select`
   evaluates `select_fn(server weights + round, key)` on the server for each
   key and sends every client only its own submodel, encoded with the
   broadcast codec when one is configured. `bytes_down` counts exactly what
   each client receives.
2. **Train** — the configured client work (TFF's model-delta SGD, or DP-SGD)
   runs on the *submodel*: a real smaller Keras model, so its FLOPs shrink.
3. **Uplink** — the submodel update is encoded with the uplink codec
   (`bytes_up` counts the payload plus the weight; the quantization seed
   derives from the slot, so clients sharing a mask still draw independent
   noise), then decoded as the server would.
4. **Scatter and count-average** — decoded updates are scattered into the
   global shape and averaged per coordinate by the total weight of the
   clients that trained it: ``u_j = sum_i w_i m_ij u_ij / sum_i w_i m_ij``
   where ``m_ij`` is 1 if client i kept coordinate j. Coordinates nobody
   trained get a zero update and keep their value. The per-coordinate weight
   ``sum_i w_i m_ij`` only needs each client's mask (known to the server from
   the keys) and weight.
5. **Finalize** — the server optimizer applies the averaged update to the
   full model, which is what gets evaluated.

Steps 3-4's decode and scatter are server work; TFF has no per-client map on
the server, so they run as `federated_map`s at CLIENTS — the bytes measured
are still only those of the encoded payloads.

The weighted sum goes through an unweighted aggregation factory on the
global shape (`tff.aggregators.SumFactory` by default), so DP noise can be
added on the global shape where clipping of a scattered update equals
clipping of the submodel update (zeros add nothing to its norm).
"""

from __future__ import annotations

import collections
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.dropout import submodel as submodel_lib
from tff_compress.learning import encoded
from tff_compress.learning import payload
from tff_compress.privacy import bounded
from tff_compress.privacy import factories as dp_factories

LearningAlgorithmState = tff.learning.templates.LearningAlgorithmState


def _first(dataset):
  return dataset.get_single_element()


BROADCAST_DIRECTION, UPLINK_DIRECTION = 1, 2


def submodel_codec_seed(base_seed: int, round_num, key, direction: int
                        ) -> tf.Tensor:
  """Codec seed of slot `key`'s submodel message in round `round_num` (from 1).

  `direction` is BROADCAST_DIRECTION or UPLINK_DIRECTION; the device-round
  server (`mobile_export/server.py`) uses the same seeds.
  """
  s = submodel_lib.mask_seed(base_seed, round_num, key)
  return tf.random.experimental.stateless_fold_in(
      s, tf.constant(direction, tf.int64))


def build_dropout_process(
    *,
    initial_weights_fn: tff.Computation,
    plan: submodel_lib.SubmodelPlan,
    sub_model_weights_type,
    client_work: tff.learning.templates.ClientWorkProcess,
    finalizer: tff.learning.templates.FinalizerProcess,
    broadcast: encoded.CodecConfig,
    uplink: encoded.CodecConfig,
    seed: int,
    clients_per_round: int,
    per_client_masks: bool,
    sum_factory: Optional[tff.aggregators.UnweightedAggregationFactory] = None,
    sum_scale: float = 1.0,
    zeroing_norm: Optional[float] = None,
    client_clip: Optional[float] = None,
    client_data_type=None,
) -> tff.learning.templates.LearningProcess:
  """The Federated Dropout learning process.

  Args:
    initial_weights_fn: Server computation returning the full model's
      initial `ModelWeights`.
    plan: How full weights map to the submodel.
    sub_model_weights_type: TFF type of the submodel's `ModelWeights`.
    client_work: A `ClientWorkProcess` over the submodel.
    finalizer: A `FinalizerProcess` over the full model.
    broadcast: Broadcast codec settings (identity = float32).
    uplink: Uplink codec settings (identity = float32).
    seed: Config seed (masks and codec seeds derive from it and the round).
    clients_per_round: K; mask keys lie in [0, K-1].
    per_client_masks: False gives every client the round's mask 0.
    sum_factory: Unweighted aggregation of the weighted, scattered updates
      on the global shape (default `tff.aggregators.SumFactory()`; with
      user-level DP, TFF's `DifferentiallyPrivateFactory`).
    sum_scale: Multiplies `sum_factory`'s result back into a sum (K for a DP
      factory whose query averages over K expected clients).
    zeroing_norm: If set, a submodel update with a non-finite entry or L2
      norm above it is replaced by zeros before encoding (counted in
      `zeroed`).
    client_clip: If set (fixed-clip DP), the client clips its submodel
      update and encodes it so that the *decoded* update has L2 norm <= it
      (`privacy/bounded.py`); scattering adds only zeros, so the global
      record the DP sum sees has the same bound.
    client_data_type: TFF type of one client's dataset (`SequenceType`).

  Returns:
    A `tff.learning.templates.LearningProcess` whose `next` takes, per client,
    ``OrderedDict(key=int32[1] slot, data=dataset)`` (see `client_inputs`).
  """
  model_weights_type = initial_weights_fn.type_signature.result
  global_type = model_weights_type.trainable
  sub_trainable_type = sub_model_weights_type.trainable
  down_coder = (None if broadcast.is_identity else
                encoded.StructureCodec(sub_model_weights_type, broadcast))
  up_coder = (None if uplink.is_identity else
              encoded.StructureCodec(sub_trainable_type, uplink))
  summer = (sum_factory or tff.aggregators.SumFactory()).create(global_type)
  # Mask keys lie in [0, max_key]; federated_select may use the bound.
  max_key_value = np.int32(clients_per_round - 1 if per_client_masks else 0)

  def kept_for(round_num, key):
    return plan.kept_indices(submodel_lib.mask_seed(seed, round_num, key))

  def codec_seed(round_num, key, direction):
    return submodel_codec_seed(seed, round_num, key, direction)

  server_val_type = tff.StructType([('weights', model_weights_type),
                                    ('round', np.int64)])

  # federated_select delivers a *sequence* (a tf.data dataset) per client,
  # and TFF 0.87 maps its elements between TFF's order and tf.nest's, which
  # sorts dict keys: a dict whose keys are not in sorted order (a codec
  # entry's 'quantize/min', 'quantize/max') arrives with its values
  # swapped. So the encoded message crosses as a flat tuple in tf.nest order
  # and is repacked on the client.
  if down_coder is not None:
    message_template = collections.OrderedDict(
        payload=[collections.OrderedDict((name, 0) for name in spec)
                 for spec in down_coder.specs()],
        seed=0)

  @tff.tensorflow.computation(server_val_type, np.int32)
  def select_fn(server_val, key):
    kept = kept_for(server_val['round'], key)
    sub = tff.learning.models.ModelWeights(
        trainable=plan.gather(list(server_val['weights'].trainable), kept),
        non_trainable=list(server_val['weights'].non_trainable))
    if down_coder is None:
      return sub
    s = codec_seed(server_val['round'], key, BROADCAST_DIRECTION)
    return tuple(tf.nest.flatten(collections.OrderedDict(
        payload=down_coder.encode(sub, s), seed=s)))

  selected_type = select_fn.type_signature.result

  @tff.tensorflow.computation(tff.SequenceType(selected_type))
  def receive(messages):
    message = _first(messages)
    if down_coder is None:
      weights = message
    else:
      unpacked = tf.nest.pack_sequence_as(message_template, list(message))
      weights = down_coder.decode(unpacked['payload'], unpacked['seed'])
    return weights, payload.tensor_bytes(message)

  @tff.tensorflow.computation(sub_trainable_type, np.int64, np.int32)
  def encode_up(update, round_num, slot):
    zeroed = tf.constant(0, tf.int32)
    if zeroing_norm is not None:
      update, zeroed = dp_factories.zero_bad_value(update, zeroing_norm)
    if up_coder is None:
      if client_clip is not None:
        update = bounded.clip_by_global_l2_norm(update, client_clip)
      return update, zeroed
    s = codec_seed(round_num, slot, UPLINK_DIRECTION)
    if client_clip is not None:
      payload_ = bounded.bounded_encode(up_coder, update, s, client_clip)
    else:
      payload_ = up_coder.encode(update, s)
    return collections.OrderedDict(payload=payload_, seed=s), zeroed

  up_message_type = encode_up.type_signature.result[0]

  @tff.tensorflow.computation(up_message_type, np.float32)
  def bytes_up_of(message, weight):
    return payload.tensor_bytes((message, weight))

  @tff.tensorflow.computation(up_message_type, np.float32, np.int64, np.int32)
  def decode_and_scatter(message, weight, round_num, key):
    if up_coder is None:
      update = message
    else:
      update = up_coder.decode(message['payload'], message['seed'])
    kept = kept_for(round_num, key)
    full = plan.scatter(tf.nest.flatten(update), kept)
    cover = plan.coverage(kept)
    template = tff.types.structure_from_tensor_type_tree(
        lambda t: 0, global_type)
    return (tf.nest.pack_sequence_as(template, [weight * u for u in full]),
            tf.nest.pack_sequence_as(template, [weight * c for c in cover]))

  @tff.tensorflow.computation(global_type, global_type)
  def count_average(total, counts):
    flat_t, flat_c = tf.nest.flatten(total), tf.nest.flatten(counts)
    flat_t = [t * sum_scale for t in flat_t] if sum_scale != 1.0 else flat_t
    mean = [tf.math.divide_no_nan(t, c) for t, c in zip(flat_t, flat_c)]
    untrained = tf.add_n([tf.reduce_sum(tf.cast(c <= 0, tf.float32))
                          for c in flat_c])
    size = sum(int(np.prod(c.shape)) for c in flat_c)
    return (tf.nest.pack_sequence_as(total, mean),
            untrained / tf.constant(size, tf.float32))

  @tff.tensorflow.computation
  def initial_round():
    return tf.constant(1, tf.int64)

  @tff.tensorflow.computation(np.int64)
  def increment(round_num):
    return round_num + 1

  @tff.federated_computation()
  def init_fn():
    return tff.federated_zip(LearningAlgorithmState(
        tff.federated_eval(initial_weights_fn, tff.SERVER),
        tff.federated_eval(initial_round, tff.SERVER),
        client_work.initialize(),
        summer.initialize(),
        finalizer.initialize()))

  client_input_type = tff.FederatedType(
      collections.OrderedDict(key=tff.TensorType(np.int32, (1,)),
                              data=client_data_type), tff.CLIENTS)

  @tff.tensorflow.computation(tff.TensorType(np.int32, (1,)))
  def mask_keys_of(slots):
    return slots if per_client_masks else tf.zeros_like(slots)

  @tff.tensorflow.computation(tff.TensorType(np.int32, (1,)))
  def scalar(keys):
    return keys[0]

  @tff.federated_computation(init_fn.type_signature.result, client_input_type)
  def next_fn(state, client_input):
    round_num = state.distributor
    slots = client_input.key
    keys = tff.federated_map(mask_keys_of, slots)
    max_key = tff.federated_value(max_key_value, tff.SERVER)
    received = tff.federated_select(
        keys, max_key,
        tff.federated_zip(collections.OrderedDict(
            weights=state.global_model_weights, round=round_num)),
        select_fn)
    sub_weights, down_bytes = tff.federated_map(receive, received)
    cw_out = client_work.next(state.client_work, sub_weights,
                              client_input.data)
    key = tff.federated_map(scalar, keys)
    slot = tff.federated_map(scalar, slots)
    round_at_clients = tff.federated_broadcast(round_num)
    message, zeroed = tff.federated_map(
        encode_up, (cw_out.result.update, round_at_clients, slot))
    up_bytes = tff.federated_map(
        bytes_up_of, (message, cw_out.result.update_weight))
    weighted, counts = tff.federated_map(
        decode_and_scatter,
        (message, cw_out.result.update_weight, round_at_clients, key))
    sum_out = summer.next(state.aggregator, weighted)
    update, untrained = tff.federated_map(
        count_average, (sum_out.result, tff.federated_sum(counts)))
    fin_out = finalizer.next(state.finalizer, state.global_model_weights,
                             update)
    new_state = tff.federated_zip(LearningAlgorithmState(
        fin_out.result, tff.federated_map(increment, round_num),
        cw_out.state, sum_out.state, fin_out.state))
    metrics = tff.federated_zip(collections.OrderedDict(
        distributor=tff.federated_zip(collections.OrderedDict(
            bytes_down=tff.federated_sum(down_bytes))),
        client_work=cw_out.measurements,
        aggregator=tff.federated_zip(collections.OrderedDict(
            bytes_up=tff.federated_sum(up_bytes),
            untrained_fraction=untrained,
            zeroed=tff.federated_sum(zeroed),
            inner=sum_out.measurements)),
        finalizer=fin_out.measurements))
    return tff.learning.templates.LearningProcessOutput(new_state, metrics)

  state_type = next_fn.type_signature.parameter[0].member

  @tff.tensorflow.computation(state_type)
  def get_model_weights(state):
    return state.global_model_weights

  @tff.tensorflow.computation(state_type, state_type.global_model_weights)
  def set_model_weights(state, weights):
    return LearningAlgorithmState(weights, state.distributor,
                                  state.client_work, state.aggregator,
                                  state.finalizer)

  return tff.learning.templates.LearningProcess(
      init_fn, next_fn, get_model_weights, set_model_weights)


def client_inputs(datasets) -> list:
  """Per-client `next` inputs: the client's slot in the round beside its data."""
  return [collections.OrderedDict(key=np.array([slot], np.int32), data=ds)
          for slot, ds in enumerate(datasets)]
