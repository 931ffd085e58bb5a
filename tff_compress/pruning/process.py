"""One pruning phase as a TFF learning process (TFF's five stages).

Per round, with the phase's sparsity s fixed (static shapes):

1. server: the global masks are brought to s from the magnitudes of the
   aggregated model (`Layout.update`; a no-op once they keep the phase's
   counts) and the model is projected onto them (masked coordinates = 0);
2. distributor: the server sends the kept coordinates only
   (`Layout.compact`), through the broadcast codec when one is set, with
   the packed masks; a client rebuilds its model from them
   (`Layout.client_weights`: the full-shape model under tfmot's mask
   wrapper, or a real smaller model for `units`);
3. client work: the configured one (TFF's model-delta SGD, DP-SGD, fault
   injection) on that model; its update is cut back to the kept
   coordinates on the client (`Layout.client_update`);
4. aggregator: the registry's, unchanged, on the compact update (zeroing,
   clipping and DP noise, the uplink codec, secure sum, the mean: every
   client trains the same coordinates, so the plain mean is exact);
5. server: the mean is scattered to the full shape, TFF's optimizer
   finalizer applies it, and the model is projected onto the masks again
   (server momentum must not revive a masked coordinate).

Where the mask is decided, and why the server: a mask must be one for all
clients, or the compact vectors would not line up and the averaged model
would not be sparse; the aggregated model is the only one whose magnitudes
reflect every client's data (a client's local magnitudes follow its own
non-IID labels); both sides then know the mask, so only values cross the
network; and a client spends no compute on ranking 1.6 M weights.

`bytes_down` counts each client's compact payload. The masks ride with
every broadcast here (simulation plumbing), but a client keeps its mask, so
the driver counts them only for clients that do not hold the current one
(`schedule.Schedule.mask_recipients` × `Layout.mask_message_bytes`, which
the `pruning.mask_bytes` measurement equals).

The state is TFF's `LearningAlgorithmState` with the distributor's slot
holding ``<round (codec seed), masks>``, the same type in every phase, so a
run hands the state from one phase's process to the next, checkpoints and
`get_model_weights` work as for any learning process.
"""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.encoders import chain as chain_lib
from tff_compress.encoders import settings as codec_settings
from tff_compress.encoders import structure
from tff_compress.learning import algorithm_state
from tff_compress.learning import distributors
from tff_compress.pruning import masks as masks_lib

LearningAlgorithmState = tff.learning.templates.LearningAlgorithmState
ModelWeights = tff.learning.models.ModelWeights


def build_phase_process(
    *,
    layout: masks_lib.Layout,
    sparsity: float,
    initial_weights_fn: tff.Computation,
    client_weights_type,
    client_work: tff.learning.templates.ClientWorkProcess,
    aggregator: tff.aggregators.WeightedAggregationFactory,
    finalizer: tff.learning.templates.FinalizerProcess,
    codec: codec_settings.CodecSettings,
    seed: int,
) -> tff.learning.templates.LearningProcess:
  """The learning process of one phase (module docstring).

  Args:
    layout: The run's mask layout.
    sparsity: The phase's sparsity.
    initial_weights_fn: Server computation of the global model's initial
      `ModelWeights`.
    client_weights_type: The `ModelWeights` type `client_work` takes
      (`layout.client_task(task, sparsity)`'s model).
    client_work: The client work on that model.
    aggregator: A weighted aggregation factory; created here on the
      compact update type.
    finalizer: The server optimizer on the global model.
    codec: The broadcast codec.
    seed: The config seed (broadcast codec seeds).
  """
  model_weights_type = initial_weights_fn.type_signature.result
  mask_types = [tff.TensorType(np.bool_, s) for s in layout.mask_shapes]
  masks_type = tff.StructWithPythonType(mask_types, list)

  def compact_weights(weights, masks):
    return ModelWeights(
        layout.compact(list(weights.trainable), masks, sparsity),
        list(weights.non_trainable))

  @tff.tensorflow.computation(model_weights_type, masks_type)
  def compact_type_probe(weights, masks):
    return compact_weights(weights, masks)

  compact_type = compact_type_probe.type_signature.result
  coder = (None if codec.is_identity else
           structure.StructureCodec(compact_type, codec))

  @tff.tensorflow.computation
  def initial_pruning_state():
    return collections.OrderedDict(round=tf.constant(0, tf.int64),
                                   masks=layout.initial_masks())

  @tff.tensorflow.computation(model_weights_type, masks_type)
  def prepare(weights, masks):
    masks = layout.update(list(weights.trainable), list(masks), sparsity)
    projected = ModelWeights(layout.project(list(weights.trainable), masks),
                             list(weights.non_trainable))
    return projected, masks

  @tff.tensorflow.computation(model_weights_type, masks_type, np.int64)
  def encode(weights, masks, round_num):
    compact = compact_weights(weights, list(masks))
    packed = [masks_lib.pack(m) for m in masks]
    if coder is None:
      return collections.OrderedDict(payload=compact, masks=packed)
    s = distributors.broadcast_seed(seed, round_num)
    return collections.OrderedDict(payload=coder.encode(compact, s), seed=s,
                                   masks=packed)

  message_type = encode.type_signature.result

  @tff.tensorflow.computation(message_type)
  def receive(message):
    if coder is None:
      compact = message['payload']
    else:
      compact = coder.decode(message['payload'], message['seed'])
    masks = [masks_lib.unpack(p, s)
             for p, s in zip(message['masks'], layout.mask_shapes)]
    sent = {k: v for k, v in message.items() if k != 'masks'}
    return (layout.client_weights(compact, masks),
            chain_lib.payload_bytes(sent))

  @tff.tensorflow.computation(message_type)
  def mask_bytes_of(message):
    return chain_lib.payload_bytes(message['masks'])

  @tff.tensorflow.computation(
      client_work.next.type_signature.result.result.member.update,
      client_weights_type)
  def compact_update(update, client_weights):
    return layout.client_update(list(update), client_weights, sparsity)

  compact_update_type = compact_update.type_signature.result
  aggregation = aggregator.create(compact_update_type,
                                  tff.TensorType(np.float32))

  @tff.tensorflow.computation(compact_update_type, masks_type)
  def expand(mean, masks):
    return layout.expand(list(mean), list(masks), sparsity)

  @tff.tensorflow.computation(model_weights_type, masks_type)
  def finish(weights, masks):
    trainable = layout.project(list(weights.trainable), list(masks))
    return (ModelWeights(trainable, list(weights.non_trainable)),
            layout.sparsity(trainable))

  @tff.tensorflow.computation(np.int64)
  def increment(round_num):
    return round_num + 1

  @tff.federated_computation()
  def init_fn():
    return tff.federated_zip(LearningAlgorithmState(
        tff.federated_eval(initial_weights_fn, tff.SERVER),
        tff.federated_eval(initial_pruning_state, tff.SERVER),
        client_work.initialize(), aggregation.initialize(),
        finalizer.initialize()))

  client_data_type = client_work.next.type_signature.parameter[2]

  @tff.federated_computation(init_fn.type_signature.result, client_data_type)
  def next_fn(state, client_data):
    pruning_state = state.distributor
    weights, masks = tff.federated_map(
        prepare, (state.global_model_weights, pruning_state.masks))
    message = tff.federated_map(encode,
                                (weights, masks, pruning_state.round))
    client_weights, down_bytes = tff.federated_map(
        receive, tff.federated_broadcast(message))
    cw_out = client_work.next(state.client_work, client_weights, client_data)
    update = tff.federated_map(compact_update,
                               (cw_out.result.update, client_weights))
    agg_out = aggregation.next(state.aggregator, update,
                               cw_out.result.update_weight)
    fin_out = finalizer.next(state.finalizer, weights,
                             tff.federated_map(expand, (agg_out.result, masks)))
    new_weights, sparsity_now = tff.federated_map(
        finish, (fin_out.result, masks))
    new_pruning_state = tff.federated_zip(collections.OrderedDict(
        round=tff.federated_map(increment, pruning_state.round),
        masks=masks))
    new_state = tff.federated_zip(LearningAlgorithmState(
        new_weights, new_pruning_state, cw_out.state, agg_out.state,
        fin_out.state))
    metrics = tff.federated_zip(collections.OrderedDict(
        distributor=tff.federated_zip(collections.OrderedDict(
            bytes_down=tff.federated_sum(down_bytes))),
        client_work=cw_out.measurements,
        aggregator=agg_out.measurements,
        finalizer=fin_out.measurements,
        pruning=tff.federated_zip(collections.OrderedDict(
            sparsity=sparsity_now,
            mask_bytes=tff.federated_map(mask_bytes_of, message)))))
    return tff.learning.templates.LearningProcessOutput(new_state, metrics)

  state_type = init_fn.type_signature.result.member

  get_model_weights, set_model_weights = algorithm_state.weights_accessors(
      state_type)

  return tff.learning.templates.LearningProcess(
      init_fn, next_fn, get_model_weights, set_model_weights)
