"""FedPer's TFF pieces: layers that stay on the clients (Arivazhagan et al.
2019, "Federated Learning with Personalization Layers").

The model's trainable variables are split by a `LayerSplit` into *shared*
ones — federated as usual — and *local* ones (the classifier head by
default) that each client keeps. Nothing of the local layers ever crosses
the (simulated) network, and the types say so:

* the distributor is built on the **shared** `ModelWeights` type: the
  server sends only the shared layers (`bytes_down` shrinks by the local
  layers' bytes);
* the client work trains the whole model — the received shared layers and
  the client's own local layers — with any TFF client work (`sgd`,
  `fedprox`, DP-SGD) and splits the result: the update of the shared layers
  goes to the aggregator, the client's new local layers stay at CLIENTS;
* the aggregator and the server optimizer are built on the shared
  trainable type (`bytes_up` shrinks likewise);
* the server's model keeps the local layers it was initialised with, never
  changed (so `get_model_weights`, checkpoints and export keep the model's
  structure).

`compose_local_layers_process` returns a process whose `next` takes each
client's local layers beside its data and returns the clients' new local
layers — CLIENTS-placed, so the simulation hands them back to the driver,
which keeps them per client id (the phone's storage) for the client's next
round.

A client's new local layers are ``l₀ − Δ_l`` with Δ = w₀ − w₁ the update
TFF's client works report (equal to the trained l₁ up to one float32
rounding); a client whose update was non-finite (TFF zeroes it, weight 0)
keeps l₀.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, NamedTuple, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.learning import algorithm_state
from tff_compress.personalization import layers as layers_lib

LearningAlgorithmState = tff.learning.templates.LearningAlgorithmState
ModelWeights = tff.learning.models.ModelWeights


@dataclasses.dataclass(frozen=True)
class LayerSplit:
  """Which of a model's trainable variables are local (the rest are shared).

  Attributes:
    local: Positions of the local variables in `ModelWeights.trainable`.
    num_trainable: Number of trainable variables.
  """

  local: tuple[int, ...]
  num_trainable: int

  def __post_init__(self):
    if not self.local or len(set(self.local)) != len(self.local):
      raise ValueError(f'local positions must be distinct, got {self.local}')
    if min(self.local) < 0 or max(self.local) >= self.num_trainable:
      raise ValueError(f'local positions {self.local} outside 0..'
                       f'{self.num_trainable - 1}')
    if len(self.local) == self.num_trainable:
      raise ValueError('every trainable variable is local: nothing to '
                       'federate')

  @classmethod
  def of(cls, model: tf.keras.Model, spec: str) -> 'LayerSplit':
    """The split of `model` keeping the layers of `spec` (layers.py) local."""
    return cls(layers_lib.resolve(spec, model), len(model.trainable_weights))

  @property
  def shared(self) -> tuple[int, ...]:
    return tuple(i for i in range(self.num_trainable)
                 if i not in self.local)

  def local_of(self, trainable: Sequence[Any]) -> list:
    return [trainable[i] for i in self.local]

  def shared_of(self, trainable: Sequence[Any]) -> list:
    return [trainable[i] for i in self.shared]

  def merge(self, shared: Sequence[Any], local: Sequence[Any]) -> list:
    """The trainable list from its shared and local parts."""
    shared, local = list(shared), list(local)
    if len(shared) != self.num_trainable - len(self.local):
      raise ValueError(f'{len(shared)} shared values, expected '
                       f'{self.num_trainable - len(self.local)}')
    if len(local) != len(self.local):
      raise ValueError(f'{len(local)} local values, expected '
                       f'{len(self.local)}')
    by_position = dict(zip(self.shared, shared))
    by_position.update(zip(self.local, local))
    return [by_position[i] for i in range(self.num_trainable)]


def shared_model_weights(split: LayerSplit, weights) -> ModelWeights:
  """`ModelWeights` of the shared layers (all non-trainable variables)."""
  return ModelWeights(trainable=split.shared_of(list(weights.trainable)),
                      non_trainable=list(weights.non_trainable))


def merged_model_weights(split: LayerSplit, shared, local) -> ModelWeights:
  """The whole model's `ModelWeights` from the shared ones and local layers."""
  return ModelWeights(
      trainable=split.merge(list(shared.trainable), list(local)),
      non_trainable=list(shared.non_trainable))


def build_select_shared(model_weights_type, split: LayerSplit
                        ) -> tff.Computation:
  """TF computation: whole `ModelWeights` -> shared `ModelWeights`."""

  @tff.tensorflow.computation(model_weights_type)
  def select_shared(weights):
    return shared_model_weights(split, weights)

  return select_shared


def local_type(model_weights_type, split: LayerSplit) -> tff.Type:
  """The TFF type of one client's local layers (a list of tensors)."""
  trainable = model_weights_type.trainable
  return tff.types.StructWithPythonType(
      [trainable[i] for i in split.local], list)


def initial_local_layers(weights, split: LayerSplit) -> list[np.ndarray]:
  """The local layers of `weights` (a `ModelWeights` value) as arrays."""
  return [np.asarray(w) for w in split.local_of(list(weights.trainable))]


class ClientOutput(NamedTuple):
  """What the local-layers client work produces at each client.

  Attributes:
    client_result: `ClientResult` of the shared layers' update (what the
      aggregator receives).
    local: The client's new local layers (they stay at CLIENTS).
  """

  client_result: Any
  local: Any


def build_local_layers_client_work(
    inner: tff.learning.templates.ClientWorkProcess, split: LayerSplit,
) -> tff.templates.MeasuredProcess:
  """Trains the whole model at each client; reports only the shared update.

  Args:
    inner: A client work on the whole model (`ModelWeights` of every
      variable), e.g. TFF's model-delta or proximal client work.
    split: Which trainable variables are local.

  Returns:
    A `MeasuredProcess` with `inner`'s state and measurements whose
    `next(state, shared@CLIENTS, OrderedDict(local, data)@CLIENTS)` result
    is a `ClientOutput` at CLIENTS. (Not a `ClientWorkProcess`: TFF's
    template admits no per-client output besides the `ClientResult`.)
  """
  next_type = inner.next.type_signature
  weights_type = next_type.parameter[1].member
  data_type = next_type.parameter[2].member
  result_type = next_type.result.result.member
  shared_type = build_select_shared(weights_type, split).type_signature.result
  local_t = local_type(weights_type, split)
  client_data_type = tff.StructWithPythonType(
      [('local', local_t), ('data', data_type)], collections.OrderedDict)

  @tff.tensorflow.computation(shared_type, local_t)
  def merge(shared, local):
    return merged_model_weights(split, shared, local)

  @tff.tensorflow.computation(result_type, local_t)
  def split_result(result, local):
    update = list(result.update)
    new_local = [l - d for l, d in zip(local, split.local_of(update))]
    return ClientOutput(
        client_result=tff.learning.templates.ClientResult(
            update=split.shared_of(update),
            update_weight=result.update_weight),
        local=new_local)

  @tff.federated_computation(
      next_type.parameter[0], tff.FederatedType(shared_type, tff.CLIENTS),
      tff.FederatedType(client_data_type, tff.CLIENTS))
  def next_fn(state, shared, client_data):
    whole = tff.federated_map(merge, (shared, client_data.local))
    out = inner.next(state, whole, client_data.data)
    result = tff.federated_map(split_result, (out.result, client_data.local))
    return tff.templates.MeasuredProcessOutput(
        state=out.state, result=result, measurements=out.measurements)

  return tff.templates.MeasuredProcess(inner.initialize, next_fn)


class LocalLayersOutput(NamedTuple):
  """`next`'s output: server state, server metrics, clients' local layers."""

  state: Any
  metrics: Any
  local: Any


class LocalLayersProcess(tff.templates.IterativeProcess):
  """A learning process whose clients keep local layers between rounds.

  `initialize() -> state`, `next(state, inputs) -> LocalLayersOutput` with
  `inputs` one ``OrderedDict(local=..., data=...)`` per client (see
  `client_inputs`), `get_model_weights(state)` and
  `set_model_weights(state, weights)` as in a `LearningProcess` (the
  server's whole model, whose local layers are those it was initialised
  with).
  """

  def __init__(self, initialize_fn, next_fn, get_model_weights,
               set_model_weights, split: LayerSplit):
    super().__init__(initialize_fn, next_fn)
    self.get_model_weights = get_model_weights
    self.set_model_weights = set_model_weights
    self.split = split


def compose_local_layers_process(
    initial_weights_fn: tff.Computation,
    distributor: tff.templates.MeasuredProcess,
    client_work: tff.templates.MeasuredProcess,
    aggregator: tff.templates.AggregationProcess,
    finalizer: tff.learning.templates.FinalizerProcess,
    split: LayerSplit,
) -> LocalLayersProcess:
  """distributor -> client work -> aggregator -> finalizer on the shared
  layers; the local layers go in and out at CLIENTS only.

  Args:
    initial_weights_fn: Server computation of the whole initial model.
    distributor: Built on the shared `ModelWeights` type.
    client_work: `build_local_layers_client_work(...)`.
    aggregator: Created on the shared trainable type.
    finalizer: Built on the shared `ModelWeights` type.
    split: The split the pieces were built for.

  The state is TFF's `LearningAlgorithmState` (whole model weights; the
  other members are the pieces' states).
  """
  model_weights_type = initial_weights_fn.type_signature.result
  select_shared = build_select_shared(model_weights_type, split)
  shared_type = select_shared.type_signature.result
  client_input_type = client_work.next.type_signature.parameter[2]

  @tff.tensorflow.computation(shared_type, model_weights_type)
  def with_new_shared(shared, whole):
    # The server's local layers are never updated: they stay as initialised.
    return merged_model_weights(
        split, shared, split.local_of(list(whole.trainable)))

  @tff.federated_computation()
  def init_fn():
    return tff.federated_zip(LearningAlgorithmState(
        tff.federated_eval(initial_weights_fn, tff.SERVER),
        distributor.initialize(), client_work.initialize(),
        aggregator.initialize(), finalizer.initialize()))

  @tff.federated_computation(init_fn.type_signature.result, client_input_type)
  def next_fn(state, client_input):
    shared = tff.federated_map(select_shared, state.global_model_weights)
    dist_out = distributor.next(state.distributor, shared)
    cw_out = client_work.next(state.client_work, dist_out.result,
                              client_input)
    agg_out = aggregator.next(state.aggregator,
                              cw_out.result.client_result.update,
                              cw_out.result.client_result.update_weight)
    fin_out = finalizer.next(state.finalizer, shared, agg_out.result)
    new_weights = tff.federated_map(
        with_new_shared, (fin_out.result, state.global_model_weights))
    new_state = tff.federated_zip(LearningAlgorithmState(
        new_weights, dist_out.state, cw_out.state, agg_out.state,
        fin_out.state))
    metrics = tff.federated_zip(collections.OrderedDict(
        distributor=dist_out.measurements,
        client_work=cw_out.measurements,
        aggregator=agg_out.measurements,
        finalizer=fin_out.measurements))
    return LocalLayersOutput(new_state, metrics, cw_out.result.local)

  state_type = init_fn.type_signature.result.member

  get_model_weights, set_model_weights = algorithm_state.weights_accessors(
      state_type)

  return LocalLayersProcess(init_fn, next_fn, get_model_weights,
                            set_model_weights, split)


def client_inputs(datasets: Sequence, local_layers: Sequence) -> list:
  """Per-client `next` inputs: each client's local layers beside its data."""
  if len(datasets) != len(local_layers):
    raise ValueError(f'{len(datasets)} datasets but {len(local_layers)} '
                     'clients\' local layers')
  return [collections.OrderedDict(local=list(l), data=d)
          for l, d in zip(local_layers, datasets)]
