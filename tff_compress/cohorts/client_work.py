"""Cohort execution: G simulated clients trained as one TFF client.

A TFF client costs the runtime a fixed few milliseconds per federated call
whatever it computes (`benchmarks/profile_clients.py`), which dominates a
round of 1,000 clients that each train on 4 examples. A *cohort* is one TFF
client that carries G simulated clients; the round's K sampled clients
form K / G cohorts, so the runtime pays per cohort, and the cohort trains
its G clients in one batched computation (`batched_model.py`).

Per simulated client the cohort does what the per-client process does, in
the same order and with the same TF code:

1. local training: TFF's model-delta client work — its own copy of the
   received model, its own batches (`cohorts/data.py`), SGD(M) on the mean
   loss of each batch (`client.learning_rate`, `client.momentum`); a client
   out of batches takes no step, not even a momentum one. The update is
   received − trained; a non-finite update is zeroed with weight 0 (as TFF
   does);
2. post-processing, the aggregator's per-client stages
   (`fedavg/registry.build_aggregator` without a cohort):

   * FedAvg: the uplink codec's message of the update and its decoding
     (`aggregators.encode_update` / `decode_update`, seeded by the update
     itself and the round), weighted by the example count;
   * DP-FedAvg (`dp.mode=user`, fixed clip): zeroing of a non-finite or
     over-`dp.zeroing_norm` update (`aggregators.zero_bad_value`), the DP
     query's own clip to C (`preprocess_record` of
     `privacy/factories.dp_query`), the codec under the decoded-norm bound
     (`factories.encode_record` / `decode_record`), weight 1;

3. the cohort sends the *sum* of its clients' weighted decoded updates and
   the sum of their weights; `bytes_up` counts each simulated client's own
   message (what the per-client path counts).

The server then divides the total by the total weight (FedAvg: the global
example-weighted mean) or, under DP, adds N(0, σ²C²) once to the total of
the K clipped records and divides by K; with Federated Dropout it divides
per coordinate (`build_aggregator`). The result equals per-client
simulation to float tolerance (tests/tff_compress/cohorts/).

Why ε does not change: the server's output is the same function of the K
clipped records as TFF's DP-FedAvg — each real client's record is clipped
to C on its own before any sum, so adding or removing one client moves the
noised total by at most C whatever cohort it sits in, and the noise is
N(0, σ²C²) once per round. A cohort is a simulation device: the sum of its
records is not a record, and nothing is clipped or noised at its level.
"""

from __future__ import annotations

import collections
import dataclasses
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.cohorts import batched_model
from tff_compress.cohorts import data as cohort_data
from tff_compress.encoders import bounded
from tff_compress.encoders import chain as chain_lib
from tff_compress.encoders import settings as codec_settings
from tff_compress.encoders import structure
from tff_compress.learning import aggregators
from tff_compress.learning import counters
from tff_compress.learning import keyed
from tff_compress.privacy import factories as dp_factories
from tff_compress.privacy import settings as privacy_settings

ClientResult = tff.learning.templates.ClientResult


@dataclasses.dataclass(frozen=True)
class CohortTraining:
  """How a cohort's clients train and post-process their updates.

  Attributes:
    size: G, simulated clients per cohort.
    learning_rate: Local SGD step size.
    momentum: Local SGD momentum (0 = none).
    uplink: The uplink codec of every simulated client.
    seed: The config seed (codec seeds).
    dp: The DP settings; `dp.user_level` with a fixed clip, or none.
    clients_per_round: K (the DP query's denominator).
  """

  size: int
  learning_rate: float
  momentum: float
  uplink: codec_settings.CodecSettings
  seed: int
  dp: privacy_settings.DpSettings
  clients_per_round: int


def _where_rows(active, new, old):
  """Per client (dim 0): `new` where `active`, else `old`."""
  shape = tf.concat([tf.shape(active), tf.ones([tf.rank(new) - 1], tf.int32)],
                    0)
  return tf.where(tf.reshape(active, shape), new, old)


def train_cohort(model: batched_model.BatchedModel, initial, dataset,
                 learning_rate: float, momentum: float):
  """Local SGD(M) of G clients, each from its own received weights (TF code).

  Args:
    model: The batched forward pass.
    initial: Each client's received trainable weights, stacked (list of
      ``[G, ...]``).
    dataset: Cohort steps (`cohort_data.element_spec`).
    learning_rate, momentum: TFF's `build_sgdm`: with momentum
      ``m ← μm + g, w ← w − ηm``, else ``w ← w − ηg``.

  Returns:
    ``(updates, examples, loss_sum, correct)``: per-client updates
    ``received − trained`` (each ``[G, ...]``), examples trained ``[G]``,
    and the metric sums over all rows (loss × rows, correct predictions).
  """
  g = dataset.element_spec['mask'].shape[0]
  # Tuples: tf.data would pack a list of tensors into one tensor.
  w0 = tuple(initial)
  mom = tuple(tf.zeros_like(t) for t in w0) if momentum else ()

  def step(state, batch):
    w, m, examples, loss_sum, correct = state
    mask = batch['mask']
    rows = tf.reduce_sum(mask, axis=1)  # [G]
    active = rows > 0
    with tf.GradientTape() as tape:
      tape.watch(w)
      logits = model.forward(w, batch['x'])
      ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels=batch['y'], logits=logits)
      # Each client's loss is the mean over its own rows (TFF/Keras), and
      # the clients' losses are independent: d(sum)/d(w_g) = grad of g's.
      per_client = tf.reduce_sum(ce * mask, axis=1) / tf.maximum(rows, 1.0)
      total = tf.reduce_sum(per_client)
    grads = tape.gradient(total, w)
    if momentum:
      m = tuple(_where_rows(active, momentum * a + gr, a)
                for a, gr in zip(m, grads))
      w = tuple(_where_rows(active, v - learning_rate * a, v)
                for v, a in zip(w, m))
    else:
      # A client without rows has the loss term 0 · ce, so its gradient is
      # exactly 0 and plain SGD leaves it as it is: no select (one copy of
      # every stacked weight less per step).
      w = tuple(v - learning_rate * gr for v, gr in zip(w, grads))
    hits = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                            batch['y']), tf.float32)
    return (w, m, examples + rows, loss_sum + tf.reduce_sum(ce * mask),
            correct + tf.reduce_sum(hits * mask))

  zero = tf.constant(0.0)
  w, _, examples, loss_sum, correct = dataset.reduce(
      (w0, mom, tf.zeros([g]), zero, zero), step)
  updates = [a - b for a, b in zip(w0, w)]
  return updates, examples, loss_sum, correct


@dataclasses.dataclass(frozen=True)
class CohortSlices:
  """Federated Dropout in a cohort: each client trains its own slice.

  Attributes:
    slicing: The slices (`dropout.slicing.MaskSlicing`): pure TF functions
      of (round, mask key), so a cohort cuts, seeds and scatters each
      client's slice exactly as the keyed distributor and
      `keyed.ScatterMeanFactory` do for a TFF client of its own.
    broadcast: The broadcast codec each client's slice is sent through.
    sliced_weights_type: A slice's `ModelWeights` type.
  """

  slicing: object
  broadcast: codec_settings.CodecSettings
  sliced_weights_type: object


class CohortPostProcessing:
  """Each simulated client's aggregator stages, summed over the cohort.

  Args:
    spec: The cohort's training settings.
    update_type: A client's trainable update's TFF type (its slice's, with
      `slices`).
    slices: Federated Dropout's slices, or None (every client trains the
      whole model).
    global_type: The global trainable weights' type (needed with `slices`:
      the shape updates are scattered to).
  """

  def __init__(self, spec: CohortTraining, update_type,
               slices: Optional[CohortSlices] = None, global_type=None):
    if slices is not None and global_type is None:
      raise ValueError('slices need the global trainable type')
    self._spec = spec
    self._slices = slices
    self._global_type = global_type
    self._coder = structure.StructureCodec(update_type, spec.uplink)
    self._identity = spec.uplink.is_identity
    dp = spec.dp
    self._dp = dp.user_level
    if self._dp:
      if dp.adaptive:
        raise batched_model.CohortError(
            'cohort execution supports DP-FedAvg with a fixed clip '
            '(dp.adaptive off)')
      self._query = dp_factories.dp_query(dp, spec.clients_per_round)
      if not self._identity:
        bounded.check_homogeneous(self._coder)

  def _one(self, update, examples, slot, round_num):
    """(weighted decoded update[, weighted coverage], weight, bytes, zeroed,
    scale) of one client."""
    spec = self._spec
    # TFF's model-delta client work: a non-finite update becomes zeros.
    update, non_finite = bounded.zero_if_non_finite(list(update))
    non_finite = tf.cast(non_finite, tf.int32)
    scale = tf.constant(1.0)
    if self._dp:
      # TFF's client work reports weight 0 for a non-finite update; the
      # zeroing stage counts it (its weight is ignored under DP).
      update, flag = aggregators.zero_bad_value(update, spec.dp.zeroing_norm)
      flag = tf.maximum(flag, non_finite)
      weight = tf.constant(1.0)
    else:
      weight = tf.where(non_finite > 0, 0.0, examples)
      flag = non_finite
    clip = float(spec.dp.clip) if self._dp else None
    if self._slices is not None:
      # `registry.build_aggregator` with a slicing: the client clips (DP)
      # and encodes its slice update, the server scatters the decoded one.
      message = aggregators.encode_update(self._coder, self._identity,
                                          update, spec.seed, round_num, clip)
      decoded = aggregators.decode_update(self._coder, self._identity,
                                          message)
      sent = chain_lib.payload_bytes((message, weight))
      slicing = self._slices.slicing
      key = slicing.mask_key(slot)
      keyed_round = round_num + 1  # the keyed pieces count rounds from 1
      full = slicing.scatter(tf.nest.flatten(decoded), keyed_round, key)
      cover = slicing.coverage(keyed_round, key)
      return ([weight * t for t in full] + [weight * c for c in cover],
              weight, tf.cast(sent, tf.int64), flag, scale)
    if self._dp:
      query = self._query
      params = query.derive_sample_params(query.initial_global_state())
      record = query.preprocess_record(params, update)
      message, scale = dp_factories.encode_record(
          self._coder, self._identity, record, spec.seed, round_num, clip)
      decoded = dp_factories.decode_record(self._coder, self._identity,
                                           message)
      sent = chain_lib.payload_bytes(message)
    else:
      message = aggregators.encode_update(self._coder, self._identity,
                                          update, spec.seed, round_num)
      decoded = aggregators.decode_update(self._coder, self._identity,
                                          message)
      sent = chain_lib.payload_bytes((message, weight))
      decoded = [weight * t for t in tf.nest.flatten(decoded)]
    return (list(tf.nest.flatten(decoded)), weight, tf.cast(sent, tf.int64),
            flag, scale)

  def __call__(self, updates, examples, slots, round_num):
    """Sums over the cohort's clients (TF code).

    Args:
      updates: The clients' updates, stacked (list of ``[G, ...]``).
      examples: float32 ``[G]`` examples each trained on.
      slots: int32 ``[G]`` the clients' slots in the round.
      round_num: int64 rounds applied so far (the codecs' seed).

    Returns:
      ``(total, weight, bytes_up, zeroed, scale_sum)``: Σ of the clients'
      weighted decoded updates (with `slices`: scattered to the global
      shape, followed by the Σ of their weighted coverages), Σ weights,
      Σ message bytes, clients zeroed, Σ of the DP bound scales.
    """
    if self._identity and not self._dp and self._slices is None:
      # No per-client codec: vectorized.
      flat_ok = [tf.reduce_all(tf.math.is_finite(
          tf.reshape(u, [tf.shape(u)[0], -1])), axis=1) for u in updates]
      ok = tf.reduce_all(tf.stack(flat_ok), axis=0)
      weight = tf.where(ok, examples, 0.0)
      total = [tf.reduce_sum(
          _where_rows(ok, u, tf.zeros_like(u)) *
          tf.reshape(weight, [-1] + [1] * (len(u.shape) - 1)), axis=0)
               for u in updates]
      per_client = chain_lib.payload_bytes(
          ([u[0] for u in updates], weight[0]))
      g = tf.shape(examples)[0]
      return (total, tf.reduce_sum(weight),
              tf.cast(per_client, tf.int64) * tf.cast(g, tf.int64),
              tf.reduce_sum(1 - tf.cast(ok, tf.int32)),
              tf.cast(g, tf.float32))
    if self._slices is None:
      shapes = [u.shape[1:] for u in updates]
    else:
      shapes = [t.shape for t in self._global_type] * 2
    signature = (
        [tf.TensorSpec(shape, tf.float32) for shape in shapes],
        tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.int64),
        tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.float32))
    decoded, weight, sent, flag, scale = tf.map_fn(
        lambda a: self._one(a[0], a[1], a[2], round_num),
        (updates, examples, slots), fn_output_signature=signature)
    return ([tf.reduce_sum(d, axis=0) for d in decoded],
            tf.reduce_sum(weight), tf.reduce_sum(sent),
            tf.reduce_sum(flag), tf.reduce_sum(scale))


def _receive_slices(slices: CohortSlices, weights, slots, round_num):
  """Each client's received slice, stacked, and the bytes it received.

  What the keyed distributor sends a client of slot k: the mask key's
  slice of the global model, through the broadcast codec seeded by
  (round, key) (`learning/keyed.build_keyed_distributor`).
  """
  slicing = slices.slicing
  codec = slices.broadcast
  coder = (None if codec.is_identity else
           structure.StructureCodec(slices.sliced_weights_type, codec))
  trainable = list(tf.nest.flatten(weights.trainable))
  non_trainable = list(tf.nest.flatten(weights.non_trainable))
  keyed_round = round_num + 1

  def one(slot):
    key = slicing.mask_key(slot)
    sliced = tff.learning.models.ModelWeights(
        trainable=slicing.gather(trainable, keyed_round, key),
        non_trainable=non_trainable)
    if coder is None:
      return list(sliced.trainable), chain_lib.payload_bytes(sliced)
    seed = slicing.codec_seed(keyed_round, key)
    message = collections.OrderedDict(payload=coder.encode(sliced, seed),
                                      seed=seed)
    received = coder.decode(message['payload'], seed)
    return (list(tf.nest.flatten(received.trainable)),
            chain_lib.payload_bytes(tuple(tf.nest.flatten(message))))

  shapes = [t.shape for t in slices.sliced_weights_type.trainable]
  received, sent = tf.map_fn(one, slots, fn_output_signature=(
      [tf.TensorSpec(shape, tf.float32) for shape in shapes],
      tf.TensorSpec([], tf.int64)))
  return received, tf.reduce_sum(tf.cast(sent, tf.int64))


def build_cohort_client_work(
    spec: CohortTraining, keras_model_fn, model_weights_type, input_shape,
    slices: Optional[CohortSlices] = None,
) -> tff.learning.templates.ClientWorkProcess:
  """The cohort client work: G clients' training and post-processing.

  Its result is ``ClientResult(update=Σ weighted decoded updates,
  update_weight=Σ weights)`` per cohort — with `slices`, the update is
  ``OrderedDict(total=Σ scattered weighted updates, counts=Σ weighted
  coverages)`` on the global shape (see `build_aggregator`). Its
  measurements are the standard `train` metrics (loss, accuracy over all
  simulated clients' rows) and the figures the per-client path's
  aggregator reports (`bytes_up`, `zeroed`, `bound_scale`) — and, with
  `slices`, the distributor's `bytes_down` — which move here because the
  cohort runs those per-client stages.

  Args:
    spec: The cohort settings.
    keras_model_fn: Builds the model a client trains (a submodel with
      `slices`; supported by `batched_model.check`).
    model_weights_type: The `ModelWeights` type the distributor sends (the
      global model's).
    input_shape: One example's shape.
    slices: Federated Dropout, or None.
  """
  model = batched_model.BatchedModel(keras_model_fn())
  update_type = (model_weights_type.trainable if slices is None else
                 slices.sliced_weights_type.trainable)
  post = CohortPostProcessing(spec, update_type, slices,
                              global_type=model_weights_type.trainable)
  data_type = tff.SequenceType(tff.types.tensorflow_to_type(
      cohort_data.element_spec(input_shape, spec.size)))
  counter = counters.RoundCounter(0)
  g = spec.size

  @tff.tensorflow.computation(model_weights_type, data_type, np.int64)
  def cohort_update(weights, dataset, round_num):
    slots = dataset.take(1).get_single_element()['slot']
    if slices is None:
      initial = [tf.repeat(t[None], g, axis=0)
                 for t in tf.nest.flatten(weights.trainable)]
      down = tf.constant(0, tf.int64)
    else:
      initial, down = _receive_slices(slices, weights, slots, round_num)
    updates, examples, loss_sum, correct = train_cohort(
        model, initial, dataset, spec.learning_rate, spec.momentum)
    total, weight, sent, zeroed, scale = post(updates, examples, slots,
                                              round_num)
    if slices is None:
      update = tf.nest.pack_sequence_as(weights.trainable, total)
    else:
      n = len(total) // 2
      update = collections.OrderedDict(
          total=tf.nest.pack_sequence_as(weights.trainable, total[:n]),
          counts=tf.nest.pack_sequence_as(weights.trainable, total[n:]))
    sums = collections.OrderedDict(
        loss=loss_sum, correct=correct, rows=tf.reduce_sum(examples),
        clients=tf.cast(tf.shape(examples)[0], tf.float32),
        bytes_up=sent, bytes_down=down, zeroed=zeroed, bound_scale=scale)
    return ClientResult(update=update, update_weight=weight), sums

  sums_type = cohort_update.type_signature.result[1]

  @tff.tensorflow.computation(sums_type)
  def finalize(s):
    rows = tf.maximum(s['rows'], 1.0)
    out = collections.OrderedDict(
        train=collections.OrderedDict(loss=s['loss'] / rows,
                                      accuracy=s['correct'] / rows,
                                      num_examples=s['rows']),
        bytes_up=s['bytes_up'], zeroed=s['zeroed'],
        bound_scale=s['bound_scale'] / tf.maximum(s['clients'], 1.0))
    if slices is not None:
      out['bytes_down'] = s['bytes_down']
    return out

  @tff.federated_computation()
  def init_fn():
    return counter.initialize_at_server()

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(model_weights_type, tff.CLIENTS),
      tff.FederatedType(data_type, tff.CLIENTS))
  def next_fn(state, weights, data):
    result, sums = tff.federated_map(
        cohort_update, (weights, data, tff.federated_broadcast(state)))
    return tff.templates.MeasuredProcessOutput(
        state=counter.next_at_server(state), result=result,
        measurements=tff.federated_map(finalize, tff.federated_sum(sums)))

  return tff.learning.templates.ClientWorkProcess(init_fn, next_fn)


class CohortSumFactory(tff.aggregators.WeightedAggregationFactory):
  """The server side of cohorts: sum their values and weights, then finish.

  A cohort has already run its clients' aggregator stages and sends sums;
  what is left is one server computation on the totals, `finish(total
  value, total weight) -> (result, untrained fraction)` — the division by
  the total weight, DP's noise and 1/K, or Federated Dropout's
  per-coordinate division (`build_aggregator`).
  """

  def __init__(self, finish):
    self._finish = finish

  def create(self, value_type, weight_type):
    finish = self._finish

    @tff.tensorflow.computation(value_type, weight_type)
    def finish_fn(total, weight):
      return finish(total, weight)

    @tff.federated_computation()
    def init_fn():
      return tff.federated_value((), tff.SERVER)

    @tff.federated_computation(init_fn.type_signature.result,
                               tff.FederatedType(value_type, tff.CLIENTS),
                               tff.FederatedType(weight_type, tff.CLIENTS))
    def next_fn(state, value, weight):
      result, untrained = tff.federated_map(
          finish_fn, (tff.federated_sum(value), tff.federated_sum(weight)))
      return tff.templates.MeasuredProcessOutput(
          state=state, result=result,
          measurements=tff.federated_zip(collections.OrderedDict(
              untrained_fraction=untrained)))

    return tff.templates.AggregationProcess(init_fn, next_fn)


def build_aggregator(spec: CohortTraining, sliced: bool = False
                     ) -> tff.aggregators.WeightedAggregationFactory:
  """The server side of the cohorts' sums.

  * FedAvg: a cohort sends Σ_g w_g·û_g and Σ_g w_g; the global weighted
    mean is the total over the total weight (TFF's `MeanFactory` would
    multiply by the weight again; all-zero weights give zeros, as there).
  * DP-FedAvg: the total of the K clipped records + N(0, σ²C²) per
    coordinate, added once (`dp_factories.gaussian_noise`, the query of
    TFF's `gaussian_fixed`), / K; the weights are ignored, as DP-FedAvg
    does.
  * Federated Dropout (`sliced`): the value is ``OrderedDict(total=Σ
    w·scatter(û), counts=Σ w·coverage)``; the noise (under DP) goes on the
    total — `keyed.ScatterMeanFactory`'s DP factory without its 1/K and
    ×K — and the total is divided per coordinate (`keyed.count_average`:
    0 where no client trained a coordinate).

  Args:
    spec: The cohort settings.
    sliced: The cohorts train Federated Dropout slices.
  """
  noise = dp_factories.gaussian_noise(spec.dp) if spec.dp.user_level else None

  def noised(total):
    if noise is None:
      return total
    return tf.nest.pack_sequence_as(total, noise(tf.nest.flatten(total)))

  if sliced:
    def finish(summed, weight):
      del weight  # inside the counts
      return keyed.count_average(noised(summed['total']), summed['counts'])
  elif noise is not None:
    k = float(spec.clients_per_round)

    def finish(total, weight):
      del weight
      return (tf.nest.map_structure(lambda t: t / k, noised(total)),
              tf.constant(0.0))
  else:
    def finish(total, weight):
      return (tf.nest.map_structure(
          lambda t: tf.math.divide_no_nan(t, weight), total),
              tf.constant(0.0))
  return CohortSumFactory(finish)
