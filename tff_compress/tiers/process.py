"""The tiered learning process: one TFF pass per tier, one server step.

Clients of different tiers train models of different shapes, and one TFF
computation types all its clients alike (one `ClientWorkProcess` over one
model type; one CLIENTS cardinality per call). So a round is T + 1 TFF
calls (docs/DESIGN.md "Device tiers"):

1. per tier t, `pass_t(server, clients_t)` (`keyed.compose_partial_pass`):
   the keyed distributor sends each of the tier's clients its slice
   (`tff.federated_select`, through the broadcast codec), the tier's client
   work trains the tier's model, and the tier's aggregator — zeroing, the
   uplink codec (with the DP clip on the slice update), then
   `keyed.ScatterSumFactory` — returns the tier's partial sums on the
   global shape: total_j = Σ_i w_i m_ij u_ij and counts_j = Σ_i w_i m_ij;
2. `finish(weights, finalizer state, partial sums of every tier)`: adds the
   tiers' sums, adds the DP noise once to the total, divides every
   coordinate by its count (the mean over the clients that trained it) and
   applies the server optimizer.

A tier with no client this round still makes its call, with zero clients:
its pieces' round counters (mask and codec seeds) then advance with the
round, so every piece's round is the global round, as in the one-tier
(Federated Dropout) process. With one tier the process computes exactly
what `keyed.compose_keyed_learning_process` with `ScatterMeanFactory`
computes (tested bit for bit).

The state keeps TFF's `LearningAlgorithmState` layout with one entry per
tier in `distributor`, `client_work` and `aggregator`, so checkpoints and
`get_model_weights` work as for every learning process.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import tensorflow_federated as tff
# pylint: disable=g-direct-tensorflow-import
from tensorflow_federated.python.core.impl.types import type_conversions
# pylint: enable=g-direct-tensorflow-import

from tff_compress.dropout import submodel
from tff_compress.faults import client_work as fault_client_work
from tff_compress.learning import keyed
from tff_compress.learning import task as task_lib
from tff_compress.tiers import settings as tier_settings
from tff_compress.tiers import slicing as tier_slicing

LearningAlgorithmState = tff.learning.templates.LearningAlgorithmState
# Aggregator figures summed over tiers.
_SUMMED = ('bytes_up', 'zeroed')


@dataclasses.dataclass(frozen=True)
class TierPieces:
  """A tier's distributor, client work and partial-sum aggregator."""

  slicing: keyed.Slicing
  distributor: tff.templates.MeasuredProcess
  client_work: tff.learning.templates.ClientWorkProcess
  aggregator: tff.templates.AggregationProcess  # keyed.ScatterSumFactory's


@dataclasses.dataclass(frozen=True)
class PassOutput:
  """One tier's call: its new piece states, partial sums and metrics."""

  state: Mapping[str, Any]
  partial: Any
  metrics: Mapping[str, Any]


def _to_containers(result, type_spec):
  """`result` with the Python containers `type_spec` declares.

  A computation composed with the remote-worker feed returns the right
  fields in plain containers; the checkpoints need one structure.
  """
  return type_conversions.type_to_py_container(
      tff.structure.from_container(result, recursive=True), type_spec)


def build_server_step(weights_type, slicings: Sequence[keyed.Slicing],
                      part_types: Sequence,
                      finalizer: tff.learning.templates.FinalizerProcess,
                      noise: Optional[Callable] = None) -> tff.Computation:
  """The round's server step over the tiers' partial sums.

  ``finish(weights@SERVER, finalizer state, partials@SERVER)`` adds the
  tiers' partial sums (`keyed.combine_partial_sums`: scatter, add, DP noise
  once, per-coordinate division u_j = Σ_t total_tj / Σ_t count_tj) and
  applies the server optimizer to the mean update. It returns
  ``<weights, finalizer, mean, untrained_fraction, measurements>@SERVER``
  (`mean`: the update the optimizer applied, global shapes). The
  tiered process and the device-round server (`mobile_export/server.py`)
  both close a round with it.

  Args:
    weights_type: The global `ModelWeights` type.
    slicings: Each tier's slicing, in mix order.
    part_types: Each tier's partial-sums type (its aggregator's result).
    finalizer: The server optimizer's `FinalizerProcess`.
    noise: Traced inside the step: list of total tensors -> noised list
      (DP), or None.
  """
  combine = keyed.combine_partial_sums(weights_type.trainable, slicings,
                                       part_types, noise)

  @tff.federated_computation(
      tff.FederatedType(weights_type, tff.SERVER),
      finalizer.initialize.type_signature.result,
      tff.FederatedType(tff.StructWithPythonType(list(part_types), tuple),
                        tff.SERVER))
  def finish(weights, finalizer_state, partials):
    mean, untrained = tff.federated_map(combine, partials)
    out = finalizer.next(finalizer_state, weights, mean)
    return tff.federated_zip(collections.OrderedDict(
        weights=out.result, finalizer=out.state, mean=mean,
        untrained_fraction=untrained, measurements=out.measurements))

  return finish


class TieredProcess:
  """A learning process over tiers of clients (module docstring).

  Args:
    initial_weights_fn: Server computation returning the global model's
      initial `ModelWeights`.
    names: The tiers' names, in `tiers.mix` order.
    pieces: Each tier's pieces.
    finalizer: The server optimizer's `FinalizerProcess`.
    noise: Traced inside the server step: list of total tensors -> noised
      list (DP), or None.
  """

  def __init__(self, initial_weights_fn: tff.Computation,
               names: Sequence[str], pieces: Sequence[TierPieces],
               finalizer: tff.learning.templates.FinalizerProcess,
               noise: Optional[Callable] = None):
    if len(names) != len(pieces) or not pieces:
      raise ValueError(f'{len(names)} tier names for {len(pieces)} tiers')
    self.names = tuple(names)
    self.passes = tuple(keyed.compose_partial_pass(
        p.distributor, p.client_work, p.aggregator) for p in pieces)
    self._pass_results = tuple(p.type_signature.result for p in self.passes)
    weights_type = initial_weights_fn.type_signature.result

    @tff.federated_computation()
    def init_fn():
      def per_tier(make):
        return tff.federated_zip(tuple(make(p) for p in pieces))
      return tff.federated_zip(LearningAlgorithmState(
          tff.federated_eval(initial_weights_fn, tff.SERVER),
          per_tier(lambda p: p.distributor.initialize()),
          per_tier(lambda p: p.client_work.initialize()),
          per_tier(lambda p: p.aggregator.initialize()),
          finalizer.initialize()))

    self.initialize = init_fn
    self.finish = build_server_step(
        weights_type, [p.slicing for p in pieces],
        [p.type_signature.result.member['partial'] for p in self.passes],
        finalizer, noise)

  def get_model_weights(self, state) -> tff.learning.models.ModelWeights:
    return state.global_model_weights

  def run_pass(self, state, tier: int, client_inputs: Sequence) -> PassOutput:
    """Tier `tier`'s call on its clients' inputs (possibly none)."""
    server = collections.OrderedDict(
        weights=state.global_model_weights,
        distributor=state.distributor[tier],
        client_work=state.client_work[tier],
        aggregator=state.aggregator[tier])
    out = _to_containers(self.passes[tier](server, list(client_inputs)),
                         self._pass_results[tier])
    return PassOutput(out['state'], out['partial'], out['metrics'])

  def next(self, state, tier_inputs: Sequence[Sequence]
           ) -> tff.learning.templates.LearningProcessOutput:
    """One round: every tier's pass, then the server step.

    Args:
      state: The process state.
      tier_inputs: Per tier, its clients' inputs (`keyed.client_inputs`
        entries: the client's slot in the round and its data).

    Returns:
      The new state and metrics: the standard `distributor.bytes_down`,
      `client_work.train`, `aggregator.{bytes_up, zeroed,
      untrained_fraction}` (summed or example-weighted over tiers) and, per
      tier name, `tiers[name]` = that tier's pass metrics and `clients`.
    """
    if len(tier_inputs) != len(self.passes):
      raise ValueError(f'inputs for {len(tier_inputs)} tiers, the process '
                       f'has {len(self.passes)}')
    outs = [self.run_pass(state, t, inputs)
            for t, inputs in enumerate(tier_inputs)]
    fin = self.finish(state.global_model_weights, state.finalizer,
                      tuple(o.partial for o in outs))
    new_state = LearningAlgorithmState(
        fin['weights'],
        tuple(o.state['distributor'] for o in outs),
        tuple(o.state['client_work'] for o in outs),
        tuple(o.state['aggregator'] for o in outs),
        fin['finalizer'])
    return tff.learning.templates.LearningProcessOutput(
        new_state, self._metrics(outs, [len(i) for i in tier_inputs], fin))

  def _metrics(self, outs: Sequence[PassOutput], clients: Sequence[int],
               fin) -> collections.OrderedDict:
    aggregator = collections.OrderedDict()
    for name in _SUMMED:
      if name in outs[0].metrics['aggregator']:
        aggregator[name] = sum(int(o.metrics['aggregator'][name])
                               for o in outs)
    aggregator['untrained_fraction'] = float(fin['untrained_fraction'])
    client_work = collections.OrderedDict()
    if all(isinstance(o.metrics['client_work'], Mapping) and
           'train' in o.metrics['client_work'] for o in outs):
      client_work['train'] = combine_train_metrics(
          [o.metrics['client_work']['train'] for o in outs], clients)
    return collections.OrderedDict(
        distributor=collections.OrderedDict(bytes_down=sum(
            int(o.metrics['distributor']['bytes_down']) for o in outs)),
        client_work=client_work,
        aggregator=aggregator,
        finalizer=fin['measurements'],
        tiers=collections.OrderedDict(
            (name, collections.OrderedDict(clients=n, **o.metrics))
            for name, o, n in zip(self.names, outs, clients)))

  def compose_client_data(self, wrap: Callable[[tff.Computation],
                                               tff.Computation]
                          ) -> 'TieredProcess':
    """This process with every pass composed by `wrap` (the remote-worker
    feed builds each client's dataset on the worker, `runtime/feed.py`)."""
    composed = copy.copy(self)
    composed.passes = tuple(wrap(p) for p in self.passes)
    return composed


def combine_train_metrics(per_tier: Sequence[Mapping],
                          clients: Sequence[int]) -> collections.OrderedDict:
  """The round's training metrics over tiers, each weighted by its examples.

  Tiers without clients are left out; with no client at all the metrics are
  NaN.
  """
  present = [(m, float(m['num_examples'])) for m, n in zip(per_tier, clients)
             if n and float(m['num_examples']) > 0]
  if len(present) == 1:  # (as that tier's process reports them)
    return collections.OrderedDict(present[0][0])
  out = collections.OrderedDict()
  total = sum(e for _, e in present)
  for key in per_tier[0]:
    if key in ('num_examples', 'num_batches'):
      out[key] = int(sum(float(m[key]) for m, _ in present))
    else:
      out[key] = (float(sum(float(m[key]) * e for m, e in present) / total)
                  if total else float('nan'))
  return out


@dataclasses.dataclass(frozen=True)
class TierModel:
  """What the driver needs to know about one tier.

  Attributes:
    tier: The tier of `tiers.mix`.
    index: Its position in the mix.
    plan: Its submodel plan on the global model.
    task: The model its clients train (with the activation scales when
      `tiers.rescale`).
    deploy_units: The units a phone of the tier deploys
      (`tiers.slicing.deployed_units`).
  """

  tier: tier_settings.Tier
  index: int
  plan: submodel.SubmodelPlan
  task: task_lib.Task
  deploy_units: Mapping[str, Any]

  @property
  def name(self) -> str:
    return self.tier.name

  def deployed(self, weights: tff.learning.models.ModelWeights
               ) -> tff.learning.models.ModelWeights:
    """The tier's deployed model cut from the global weights."""
    return tff.learning.models.ModelWeights(
        trainable=tier_slicing.deployed_weights(
            self.plan, self.deploy_units, weights.trainable),
        non_trainable=list(weights.non_trainable))


@dataclasses.dataclass(frozen=True)
class TieredTraining:
  """A tiered learning process plus what the driver needs to feed it.

  Attributes:
    process: The `TieredProcess` (or its remote-worker composition).
    tiers: One `TierModel` per tier, in mix order.
    assignment: int32 [num_clients]: each client index's tier.
    injects_faults: The client works poison updates per fault code.
    train_only: Index of the only tier that trains (`tiers.train_only`),
      or None.
  """

  process: Any
  tiers: tuple[TierModel, ...]
  assignment: np.ndarray
  injects_faults: bool = False
  train_only: Optional[int] = None

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(t.name for t in self.tiers)

  def tier_inputs(self, datasets: Sequence, tiers: Sequence[int],
                  faults: Optional[Sequence[int]] = None) -> list[list]:
    """`process.next`'s inputs: per tier, its clients' slot and data.

    Args:
      datasets: One dataset per client taking part, in slot order (the
        client's slot in the round is its position here, as in Federated
        Dropout).
      tiers: Each client's tier.
      faults: Per-client fault codes (None = all OK); non-OK codes need a
        process built with poisoning faults.
    """
    if self.injects_faults:
      datasets = fault_client_work.client_data(
          datasets, [0] * len(datasets) if faults is None else faults)
    elif faults is not None and any(faults):
      raise ValueError('fault codes given but faults.nan_prob and '
                       'faults.huge_prob are 0: the process cannot inject')
    inputs = keyed.client_inputs(datasets)
    out = [[] for _ in self.tiers]
    for client_input, tier in zip(inputs, tiers):
      out[int(tier)].append(client_input)
    return out
