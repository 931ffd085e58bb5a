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
import functools
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.encoders import bounded
from tff_compress.encoders import chain as chain_lib
from tff_compress.encoders import settings as codec_settings
from tff_compress.encoders import structure
from tff_compress.learning import aggregators
from tff_compress.learning import algorithm_state
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


def _scatter_computation(slicing: Slicing, value_type, weight_type,
                         global_type):
  """`(value, weight, round, slot) -> (w · scatter(value), w · coverage)`."""
  template = tff.types.structure_from_tensor_type_tree(
      lambda t: 0, global_type)

  @tff.tensorflow.computation(value_type, weight_type, np.int64, KEY_TYPE)
  def scatter(value, weight, round_num, slot):
    key = slicing.mask_key(slot[0])
    full = slicing.scatter(tf.nest.flatten(value), round_num, key)
    cover = slicing.coverage(round_num, key)
    return (tf.nest.pack_sequence_as(template, [weight * u for u in full]),
            tf.nest.pack_sequence_as(template, [weight * c for c in cover]))

  return scatter


def count_average(total, counts, sum_scale: float = 1.0):
  """Per coordinate ``sum_scale · total / counts`` (0 where counts = 0).

  Returns:
    (the mean, with `total`'s structure; the fraction of coordinates whose
    count is 0, float32).
  """
  flat_t, flat_c = tf.nest.flatten(total), tf.nest.flatten(counts)
  if sum_scale != 1.0:
    flat_t = [t * sum_scale for t in flat_t]
  mean = [tf.math.divide_no_nan(t, c) for t, c in zip(flat_t, flat_c)]
  untrained = tf.add_n([tf.reduce_sum(tf.cast(c <= 0, tf.float32))
                        for c in flat_c])
  size = sum(int(np.prod(c.shape)) for c in flat_c)
  return (tf.nest.pack_sequence_as(total, mean),
          untrained / tf.constant(size, tf.float32))


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
    global_type = self._global_type
    sum_scale = self._sum_scale
    inner = self._inner.create(global_type)
    counter = counters.RoundCounter(1)
    scatter = _scatter_computation(self._slicing, value_type, weight_type,
                                   global_type)

    @tff.tensorflow.computation(global_type, global_type)
    def average(total, counts):
      return count_average(total, counts, sum_scale)

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
          average, (out.result, tff.federated_sum(counts)))
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


class ScatterSumFactory(tff.aggregators.WeightedAggregationFactory):
  """The numerator and denominator of `ScatterMeanFactory`, not divided.

  For a round whose clients come in groups that cannot share one TFF call
  (device tiers: each tier's slices have their own shapes), each group's
  pass returns its *partial sums* and one server computation adds the
  groups' sums, adds DP noise once to the total and divides per coordinate
  (`combine_partial_sums`). The partial sums, with their round:

  * When every client of the group trains the same slice in a round
    (`slicing.max_key == 0`: nested or per-round slices), the total stays
    on the slice, ``total = Σ_i w_i u_i`` (slice-shaped; the server scatters
    it once), and ``weights = [Σ_i w_i]``: the denominators are
    ``weights[0] · coverage``. A tier's partial sums are then the size of
    its model, not of the global one.
  * Otherwise (one slice per client slot) ``total_j = Σ_i w_i m_ij u_ij`` on
    the global shape and ``weights[k]`` = the weight of the client with
    mask key k (0 if none), so the server recomputes the denominators
    ``Σ_k weights[k] m_kj`` from the slices: they depend only on masks and
    weights.

  The total goes through `inner` (an unweighted sum factory: TFF's
  SumFactory or the secure sum); the weights are a plain sum. With `clip`,
  each client's slice update is scaled to L2 norm <= clip before it is
  weighted (the DP record bound, on the client).

  The created process takes `next(state, value, weight, key)` (key: the
  client's slot, int32[1]); measurements are `inner`'s standard figures.
  """

  def __init__(self, slicing: Slicing, global_type,
               inner: tff.aggregators.UnweightedAggregationFactory = None,
               clip: Optional[float] = None):
    self._slicing = slicing
    self._global_type = global_type
    self._inner = inner or tff.aggregators.SumFactory()
    self._clip = clip

  def create(self, value_type, weight_type):
    slicing, clip = self._slicing, self._clip
    on_slice = slicing.max_key == 0
    total_type = value_type if on_slice else self._global_type
    inner = self._inner.create(total_type)
    counter = counters.RoundCounter(1)
    keys = slicing.max_key + 1
    template = tff.types.structure_from_tensor_type_tree(lambda t: 0,
                                                         total_type)

    @tff.tensorflow.computation(value_type, weight_type, np.int64, KEY_TYPE)
    def weigh(value, weight, round_num, slot):
      key = slicing.mask_key(slot[0])
      flat = tf.nest.flatten(value)
      if clip is not None:
        flat = bounded.clip_by_global_l2_norm(flat, clip)
      if not on_slice:
        flat = slicing.scatter(flat, round_num, key)
      return (tf.nest.pack_sequence_as(template, [weight * u for u in flat]),
              tf.one_hot(key, keys, dtype=tf.float32) * weight)

    @tff.federated_computation()
    def init_fn():
      return tff.federated_zip(collections.OrderedDict(
          round=counter.initialize_at_server(), inner=inner.initialize()))

    def body(state, value, weight, slot):
      round_at_clients = tff.federated_broadcast(state.round)
      weighted, by_key = tff.federated_map(
          weigh, (value, weight, round_at_clients, slot))
      out = inner.next(state.inner, weighted)
      return tff.templates.MeasuredProcessOutput(
          state=tff.federated_zip(collections.OrderedDict(
              round=counter.next_at_server(state.round), inner=out.state)),
          result=tff.federated_zip(collections.OrderedDict(
              total=out.result, weights=tff.federated_sum(by_key),
              round=state.round)),
          measurements=aggregators.measurements({}, inner, out.measurements))

    return tff.templates.AggregationProcess(
        init_fn, aggregators.next_computation(
            init_fn.type_signature.result, value_type, weight_type,
            KEY_TYPE, body))


def combine_partial_sums(global_type, slicings: Sequence[Slicing],
                         part_types: Sequence,
                         noise: Optional[Callable] = None) -> tff.Computation:
  """`(partial sums of each group) -> (mean update, untrained fraction)`.

  Scatters each group's total to the global shape and rebuilds its
  denominators from its slices (`ScatterSumFactory`), adds the groups'
  totals and counts in group order (one group: its own values, no
  addition), passes the total through `noise` (DP: Gaussian noise added
  once per round to the sum of every client's record), then divides per
  coordinate (`count_average`).

  Args:
    global_type: The global trainable weights' type.
    slicings: Each group's slicing.
    part_types: Each group's partial-sums type (its pass's `partial`).
    noise: Traced inside the computation: list of total tensors -> list of
      noised tensors.
  """
  template = tff.types.structure_from_tensor_type_tree(lambda t: 0,
                                                       global_type)

  def global_parts(slicing: Slicing, part):
    round_num, weights = part['round'], part['weights']
    flat = tf.nest.flatten(part['total'])
    if slicing.max_key == 0:
      key = tf.constant(0, tf.int32)
      return (slicing.scatter(flat, round_num, key),
              [weights[0] * c for c in slicing.coverage(round_num, key)])
    counts = None
    for k in range(slicing.max_key + 1):
      cover = slicing.coverage(round_num, tf.constant(k, tf.int32))
      weighted = [weights[k] * c for c in cover]
      counts = weighted if counts is None else [
          a + b for a, b in zip(counts, weighted)]
    return flat, counts

  def add(a, b):
    return [x + y for x, y in zip(a, b)]

  @tff.tensorflow.computation(
      tff.StructWithPythonType(list(part_types), tuple))
  def combine(parts):
    totals, counts = zip(*[global_parts(s, p)
                           for s, p in zip(slicings, parts)])
    total = functools.reduce(add, totals)
    count = functools.reduce(add, counts)
    if noise is not None:
      total = list(noise(total))
    return count_average(tf.nest.pack_sequence_as(template, total),
                         tf.nest.pack_sequence_as(template, count))

  return combine


def compose_partial_pass(
    distributor: tff.templates.MeasuredProcess,
    client_work: tff.learning.templates.ClientWorkProcess,
    aggregator: tff.templates.AggregationProcess,
) -> tff.Computation:
  """One group's part of a keyed round: distribute, train, partial sums.

  ``pass(server, clients)`` with ``server = <weights, distributor,
  client_work, aggregator>@SERVER`` (the global model and this group's
  piece states) and, per client, ``<key=int32[1] slot, data>`` returns
  ``<state=<distributor, client_work, aggregator>, partial, metrics=
  <distributor, client_work, aggregator>>@SERVER``, where `partial` is the
  aggregator's result (`ScatterSumFactory`'s partial sums). Every output is
  at SERVER, so the remote-worker feed (`runtime/feed.py`) composes it like
  a learning process's `next`.
  """
  weights_type = distributor.next.type_signature.parameter[1].member
  client_data_type = client_work.next.type_signature.parameter[2].member
  server_type = tff.FederatedType(collections.OrderedDict(
      weights=weights_type,
      distributor=distributor.initialize.type_signature.result.member,
      client_work=client_work.initialize.type_signature.result.member,
      aggregator=aggregator.initialize.type_signature.result.member),
                                  tff.SERVER)
  client_input_type = tff.FederatedType(
      collections.OrderedDict(key=KEY_TYPE, data=client_data_type),
      tff.CLIENTS)

  @tff.federated_computation(server_type, client_input_type)
  def pass_fn(server, client_input):
    slots = client_input.key
    dist_out = distributor.next(server.distributor, server.weights, slots)
    cw_out = client_work.next(server.client_work, dist_out.result,
                              client_input.data)
    agg_out = aggregator.next(server.aggregator, cw_out.result.update,
                              cw_out.result.update_weight, slots)
    return tff.federated_zip(collections.OrderedDict(
        state=tff.federated_zip(collections.OrderedDict(
            distributor=dist_out.state, client_work=cw_out.state,
            aggregator=agg_out.state)),
        partial=agg_out.result,
        metrics=tff.federated_zip(collections.OrderedDict(
            distributor=dist_out.measurements,
            client_work=cw_out.measurements,
            aggregator=agg_out.measurements))))

  return pass_fn


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

  get_model_weights, set_model_weights = algorithm_state.weights_accessors(
      state_type)

  return tff.learning.templates.LearningProcess(
      init_fn, next_fn, get_model_weights, set_model_weights)


def client_inputs(datasets) -> list:
  """Per-client `next` inputs: the client's slot in the round beside its data."""
  return [collections.OrderedDict(key=np.array([slot], np.int32), data=ds)
          for slot, ds in enumerate(datasets)]
