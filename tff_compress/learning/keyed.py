"""Per-client model slices: a keyed distributor, a scatter mean, a composer.

TFF's `compose_learning_process` broadcasts one value to every client and
hands the aggregator only `(value, weight)`. When each client trains its own
*slice* of the model (Federated Dropout's submodels, device-tier widths),
the server must send each client its slice and know which slice an update
came from. Three pieces do that, each a standard TFF piece plus one CLIENTS
argument, the client's `key` (its slot in the round):

* `build_keyed_distributor` — `tff.federated_select` sends each client only
  its slice (encoded with the broadcast codec when one is set): the server
  evaluates `select_fn(weights, round, mask key)` once per distinct key.
* `ScatterMeanFactory` — a weighted aggregation factory on slice-shaped
  values: scatters each client's decoded update into the global shape and
  averages every coordinate over the clients that trained it,
  ``u_j = Σ_i w_i m_ij u_ij / Σ_i w_i m_ij`` (m_ij = 1 if client i's slice
  holds coordinate j; coordinates nobody trained get 0). It wraps an
  unweighted *sum* factory on the global shape (TFF's `SumFactory`, or
  DP-FedAvg's noisy sum), and the toolkit's zeroing and codec wrappers nest
  around it unchanged (`learning/aggregators.py`).
* `compose_keyed_learning_process` — distributor -> client work ->
  aggregator -> finalizer with the key passed to the keyed pieces; TFF's
  `LearningAlgorithmState` layout, so checkpoints, `get_model_weights` and
  evaluation work as for any learning process.

What a slice is comes from a `Slicing` (`dropout/slicing.py`): pure
TensorFlow functions of (round, mask key), so the server, the simulation and
the device-round server cut the same slices.
"""

from __future__ import annotations

import abc
import collections
from typing import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.encoders import chain as chain_lib
from tff_compress.encoders import settings as codec_settings
from tff_compress.encoders import structure
from tff_compress.learning import aggregators
from tff_compress.learning import counters

LearningAlgorithmState = tff.learning.templates.LearningAlgorithmState
KEY_TYPE = tff.TensorType(np.int32, (1,))


class Slicing(abc.ABC):
  """Which coordinates of the global trainable weights a client trains.

  A client's slot k in round r maps to a *mask key* (`mask_key`); clients
  with the same mask key in a round train the same slice. Rounds count
  from 1 (the keyed pieces' counters start there).
  """

  @property
  @abc.abstractmethod
  def max_key(self) -> int:
    """Mask keys lie in [0, max_key]."""

  @abc.abstractmethod
  def mask_key(self, slot: tf.Tensor) -> tf.Tensor:
    """int32 mask key of a client slot (int32)."""

  @abc.abstractmethod
  def gather(self, trainable: Sequence[tf.Tensor], round_num: tf.Tensor,
             key: tf.Tensor) -> list[tf.Tensor]:
    """Global trainable weights -> the slice of mask key `key`."""

  @abc.abstractmethod
  def scatter(self, sliced: Sequence[tf.Tensor], round_num: tf.Tensor,
              key: tf.Tensor) -> list[tf.Tensor]:
    """Slice-shaped values -> global shapes, zeros off the slice."""

  @abc.abstractmethod
  def coverage(self, round_num: tf.Tensor, key: tf.Tensor
               ) -> list[tf.Tensor]:
    """Global-shaped float32: 1 where the slice holds a coordinate."""

  @abc.abstractmethod
  def codec_seed(self, round_num: tf.Tensor, key: tf.Tensor) -> tf.Tensor:
    """int64 [2] seed of the encoded slice sent to mask key `key`."""


def _first(dataset):
  return dataset.get_single_element()


def build_keyed_distributor(
    model_weights_type, sliced_weights_type, slicing: Slicing,
    codec: codec_settings.CodecSettings):
  """Sends each client its slice of the global model.

  Returns a process with `initialize() -> round@SERVER` and
  `next(round@SERVER, weights@SERVER, slot@CLIENTS) -> MeasuredProcessOutput`
  whose result is each client's slice (`ModelWeights` of
  `sliced_weights_type`) and whose measurements hold `bytes_down`.
  """
  coder = (None if codec.is_identity else
           structure.StructureCodec(sliced_weights_type, codec))
  counter = counters.RoundCounter(1)
  max_key = np.int32(slicing.max_key)
  server_val_type = tff.StructType([('weights', model_weights_type),
                                    ('round', np.int64)])

  # federated_select delivers a *sequence* (a tf.data dataset) per client,
  # and TFF 0.87 maps its elements between TFF's order and tf.nest's, which
  # sorts dict keys: a dict whose keys are not in sorted order (a codec
  # entry's 'quantize/min', 'quantize/max') arrives with its values
  # swapped. So the encoded message crosses as a flat tuple in tf.nest order
  # and is repacked on the client.
  if coder is not None:
    message_template = collections.OrderedDict(
        payload=[collections.OrderedDict((name, 0) for name in spec)
                 for spec in coder.specs()],
        seed=0)

  @tff.tensorflow.computation(server_val_type, np.int32)
  def select_fn(server_val, key):
    round_num = server_val['round']
    sliced = tff.learning.models.ModelWeights(
        trainable=slicing.gather(list(server_val['weights'].trainable),
                                 round_num, key),
        non_trainable=list(server_val['weights'].non_trainable))
    if coder is None:
      return sliced
    s = slicing.codec_seed(round_num, key)
    return tuple(tf.nest.flatten(collections.OrderedDict(
        payload=coder.encode(sliced, s), seed=s)))

  selected_type = select_fn.type_signature.result

  @tff.tensorflow.computation(tff.SequenceType(selected_type))
  def receive(messages):
    message = _first(messages)
    if coder is None:
      weights = message
    else:
      unpacked = tf.nest.pack_sequence_as(message_template, list(message))
      weights = coder.decode(unpacked['payload'], unpacked['seed'])
    return weights, chain_lib.payload_bytes(message)

  @tff.tensorflow.computation(KEY_TYPE)
  def mask_keys(slots):
    return tf.map_fn(slicing.mask_key, slots)

  @tff.federated_computation()
  def init_fn():
    return counter.initialize_at_server()

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(model_weights_type, tff.SERVER),
      tff.FederatedType(KEY_TYPE, tff.CLIENTS))
  def next_fn(round_num, weights, slots):
    received = tff.federated_select(
        tff.federated_map(mask_keys, slots),
        tff.federated_value(max_key, tff.SERVER),
        tff.federated_zip(collections.OrderedDict(weights=weights,
                                                  round=round_num)),
        select_fn)
    sliced, down_bytes = tff.federated_map(receive, received)
    return tff.templates.MeasuredProcessOutput(
        state=counter.next_at_server(round_num),
        result=sliced,
        measurements=tff.federated_zip(collections.OrderedDict(
            bytes_down=tff.federated_sum(down_bytes))))

  return tff.templates.MeasuredProcess(init_fn, next_fn)


class ScatterMeanFactory(tff.aggregators.WeightedAggregationFactory):
  """Per-coordinate weighted mean of slice-shaped updates (module docstring).

  The created process takes `next(state, value, weight, key)` with `key`
  the client's slot (int32[1]). The weighted, scattered updates go through
  `inner` (an unweighted factory on the global shape: the place for DP
  noise, where clipping a scattered update equals clipping the slice's);
  `sum_scale` turns `inner`'s result back into a sum (K for a DP factory
  whose query averages over K expected clients). The per-coordinate
  denominators Σ_i w_i m_ij depend only on the slices and the weights.

  Measurements: `untrained_fraction` (share of coordinates no client
  trained) and `inner`'s standard figures.
  """

  def __init__(self, slicing: Slicing, global_type,
               inner: tff.aggregators.UnweightedAggregationFactory = None,
               sum_scale: float = 1.0):
    self._slicing = slicing
    self._global_type = global_type
    self._inner = inner or tff.aggregators.SumFactory()
    self._sum_scale = float(sum_scale)

  def create(self, value_type, weight_type):
    slicing, global_type = self._slicing, self._global_type
    sum_scale = self._sum_scale
    inner = self._inner.create(global_type)
    counter = counters.RoundCounter(1)
    template = tff.types.structure_from_tensor_type_tree(
        lambda t: 0, global_type)

    @tff.tensorflow.computation(value_type, weight_type, np.int64, KEY_TYPE)
    def scatter(value, weight, round_num, slot):
      key = slicing.mask_key(slot[0])
      full = slicing.scatter(tf.nest.flatten(value), round_num, key)
      cover = slicing.coverage(round_num, key)
      return (tf.nest.pack_sequence_as(template, [weight * u for u in full]),
              tf.nest.pack_sequence_as(template, [weight * c for c in cover]))

    @tff.tensorflow.computation(global_type, global_type)
    def count_average(total, counts):
      flat_t, flat_c = tf.nest.flatten(total), tf.nest.flatten(counts)
      if sum_scale != 1.0:
        flat_t = [t * sum_scale for t in flat_t]
      mean = [tf.math.divide_no_nan(t, c) for t, c in zip(flat_t, flat_c)]
      untrained = tf.add_n([tf.reduce_sum(tf.cast(c <= 0, tf.float32))
                            for c in flat_c])
      size = sum(int(np.prod(c.shape)) for c in flat_c)
      return (tf.nest.pack_sequence_as(total, mean),
              untrained / tf.constant(size, tf.float32))

    @tff.federated_computation()
    def init_fn():
      return tff.federated_zip(collections.OrderedDict(
          round=counter.initialize_at_server(), inner=inner.initialize()))

    def body(state, value, weight, slot):
      round_at_clients = tff.federated_broadcast(state.round)
      weighted, counts = tff.federated_map(
          scatter, (value, weight, round_at_clients, slot))
      out = inner.next(state.inner, weighted)
      mean, untrained = tff.federated_map(
          count_average, (out.result, tff.federated_sum(counts)))
      return tff.templates.MeasuredProcessOutput(
          state=tff.federated_zip(collections.OrderedDict(
              round=counter.next_at_server(state.round), inner=out.state)),
          result=mean,
          measurements=aggregators.measurements(
              {'untrained_fraction': untrained}, inner, out.measurements))

    return tff.templates.AggregationProcess(
        init_fn, aggregators.next_computation(
            init_fn.type_signature.result, value_type, weight_type,
            KEY_TYPE, body))


def compose_keyed_learning_process(
    initial_weights_fn: tff.Computation,
    distributor: tff.templates.MeasuredProcess,
    client_work: tff.learning.templates.ClientWorkProcess,
    aggregator: tff.templates.AggregationProcess,
    finalizer: tff.learning.templates.FinalizerProcess,
) -> tff.learning.templates.LearningProcess:
  """distributor -> client work -> aggregator -> finalizer, keyed by slot.

  `next` takes, per client, ``OrderedDict(key=int32[1] slot, data=...)``
  (see `client_inputs`). The state is TFF's `LearningAlgorithmState`.
  """
  client_data_type = client_work.next.type_signature.parameter[2].member
  client_input_type = tff.FederatedType(
      collections.OrderedDict(key=KEY_TYPE, data=client_data_type),
      tff.CLIENTS)

  @tff.federated_computation()
  def init_fn():
    return tff.federated_zip(LearningAlgorithmState(
        tff.federated_eval(initial_weights_fn, tff.SERVER),
        distributor.initialize(), client_work.initialize(),
        aggregator.initialize(), finalizer.initialize()))

  @tff.federated_computation(init_fn.type_signature.result, client_input_type)
  def next_fn(state, client_input):
    slots = client_input.key
    dist_out = distributor.next(state.distributor,
                                state.global_model_weights, slots)
    cw_out = client_work.next(state.client_work, dist_out.result,
                              client_input.data)
    agg_out = aggregator.next(state.aggregator, cw_out.result.update,
                              cw_out.result.update_weight, slots)
    fin_out = finalizer.next(state.finalizer, state.global_model_weights,
                             agg_out.result)
    new_state = tff.federated_zip(LearningAlgorithmState(
        fin_out.result, dist_out.state, cw_out.state, agg_out.state,
        fin_out.state))
    metrics = tff.federated_zip(collections.OrderedDict(
        distributor=dist_out.measurements,
        client_work=cw_out.measurements,
        aggregator=agg_out.measurements,
        finalizer=fin_out.measurements))
    return tff.learning.templates.LearningProcessOutput(new_state, metrics)

  state_type = init_fn.type_signature.result.member

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
