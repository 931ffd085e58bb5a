"""Builds the learning process from settings: TFF's five named stages."""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
import tensorflow_federated as tff

from tff_compress.cohorts import client_work as cohort_work
from tff_compress.dropout import slicing as dropout_slicing
from tff_compress.dropout import submodel as submodel_lib
from tff_compress.faults import client_work as fault_client_work
from tff_compress.fedavg import registry
from tff_compress.fedavg import settings
from tff_compress.learning import distributors
from tff_compress.learning import keyed
from tff_compress.learning import task as task_lib
from tff_compress.personalization import local_layers
from tff_compress.privacy import factories as dp_factories
from tff_compress.pruning import masks as pruning_masks
from tff_compress.pruning import phases as pruning_phases
from tff_compress.pruning import process as pruning_process
from tff_compress.pruning import schedule as pruning_schedule
from tff_compress.tiers import assignment as tier_assignment
from tff_compress.tiers import process as tier_process
from tff_compress.tiers import slicing as tier_slicing


def build_initial_weights_fn(task: task_lib.Task) -> tff.Computation:
  """Server computation returning the seeded initial `ModelWeights`."""

  @tff.tensorflow.computation()
  def initial_model_weights_fn():
    return tff.learning.models.ModelWeights.from_model(task.model_fn())

  return initial_model_weights_fn


def build_learning_process(
    ts: settings.TrainingSettings, task: task_lib.Task
) -> tff.learning.templates.LearningProcess:
  """distributor -> client work -> aggregator -> finalizer."""
  initial_weights_fn = build_initial_weights_fn(task)
  model_weights_type = initial_weights_fn.type_signature.result
  distributor = registry.build_distributor(ts, model_weights_type)
  client_work = registry.build_client_work(ts, task, model_weights_type)
  aggregator = registry.build_aggregator(ts).create(
      model_weights_type.trainable, tff.TensorType(np.float32))
  finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
      registry.build_server_optimizer(ts.server), model_weights_type)
  return tff.learning.templates.compose_learning_process(
      initial_weights_fn, distributor, client_work, aggregator, finalizer)


def cohort_spec(ts: settings.TrainingSettings) -> cohort_work.CohortTraining:
  """What a cohort's clients do, from the training settings."""
  c = ts.client
  return cohort_work.CohortTraining(
      size=ts.cohort_size, learning_rate=c.learning_rate,
      momentum=c.momentum, uplink=ts.uplink, seed=ts.seed, dp=ts.dp,
      clients_per_round=ts.clients_per_round)


def build_cohort_learning_process(
    ts: settings.TrainingSettings, task: task_lib.Task
) -> tuple[tff.learning.templates.LearningProcess, task_lib.Task,
           Optional[submodel_lib.SubmodelPlan]]:
  """Cohort execution: every TFF client trains `ts.cohort_size` clients.

  The registry's distributor and server optimizer; the cohort client work
  (`cohorts/client_work.py`: batched local SGD, then each simulated
  client's aggregator stages) and the cohorts' server-side sum. With
  Federated Dropout the cohort receives the global model and cuts each
  client's slice itself (`MaskSlicing`, as the keyed distributor does).

  Returns:
    (process, the task a client trains, the dropout plan or None).
  """
  initial_weights_fn = build_initial_weights_fn(task)
  model_weights_type = initial_weights_fn.type_signature.result
  spec = cohort_spec(ts)
  plan = dropout_plan(ts, task)
  slices, client_task = None, task
  if plan is not None:
    client_task = task.with_widths(
        plan.widths, plan.scales if ts.dropout.rescale else None)
    slices = cohort_work.CohortSlices(
        slicing=dropout_slicing.MaskSlicing(
            plan, ts.seed, ts.dropout.per_client_masks,
            ts.clients_per_round),
        broadcast=ts.broadcast,
        sliced_weights_type=build_initial_weights_fn(
            client_task).type_signature.result)
    distributor = distributors.build_plain_broadcast(model_weights_type)
  else:
    distributor = registry.build_distributor(ts, model_weights_type)
  client_work = cohort_work.build_cohort_client_work(
      spec, client_task.keras_model_fn, model_weights_type,
      tuple(task.input_spec['x'].shape[1:]), slices)
  update_type = client_work.next.type_signature.result.result.member.update
  aggregator = cohort_work.build_aggregator(spec, sliced=plan is not None
                                            ).create(
      update_type, tff.TensorType(np.float32))
  finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
      registry.build_server_optimizer(ts.server), model_weights_type)
  process = tff.learning.templates.compose_learning_process(
      initial_weights_fn, distributor, client_work, aggregator, finalizer)
  return process, client_task, plan


@dataclasses.dataclass(frozen=True)
class Training:
  """A learning process plus what the driver needs to feed and report it."""

  process: tff.learning.templates.LearningProcess
  client_task: task_lib.Task  # the model a client trains (a submodel?)
  plan: Optional[submodel_lib.SubmodelPlan] = None
  injects_faults: bool = False  # client work poisons per fault code
  # FedPer: the layers clients keep (`process` is then a
  # `local_layers.LocalLayersProcess`, fed by `local_layers.client_inputs`).
  local: Optional[local_layers.LayerSplit] = None
  # Pruning: one process per schedule phase (`at_round`); this Training is
  # the first phase's.
  phases: Optional[pruning_phases.Phases] = None
  # Cohort execution: G simulated clients per TFF client (`process` is
  # then fed `cohorts.data.cohort_dataset`s, one per cohort).
  cohort_size: int = 1

  def at_round(self, round_num: int) -> 'Training':
    """The Training that runs round `round_num` (a pruned run switches
    process at mask updates; all share one state type)."""
    return self if self.phases is None else self.phases.training(round_num)

  def client_inputs(self, datasets: list,
                    faults: Optional[Sequence[int]] = None) -> list:
    """`process.next`'s client data for the sampled clients, in slot order.

    Args:
      datasets: One dataset per client.
      faults: Per-client fault codes (`faults.schedule.OK/NAN/HUGE`); None
        = all OK. Non-OK codes need a process built with poisoning faults.
    """
    if self.injects_faults:
      datasets = fault_client_work.client_data(
          datasets, [0] * len(datasets) if faults is None else faults)
    elif faults is not None and any(faults):
      raise ValueError('fault codes given but faults.nan_prob and '
                       'faults.huge_prob are 0: the process cannot inject')
    if self.plan is None:
      return list(datasets)
    return keyed.client_inputs(datasets)


def dropout_plan(ts: settings.TrainingSettings, task: task_lib.Task
                 ) -> Optional[submodel_lib.SubmodelPlan]:
  """The submodel plan of `dropout.*`, or None when every unit is kept."""
  if not ts.dropout.active:
    return None
  return submodel_lib.plan_for(task.keras_model_fn(), ts.dropout)


def build_dropout_learning_process(
    ts: settings.TrainingSettings, task: task_lib.Task,
    plan: submodel_lib.SubmodelPlan
) -> tuple[tff.learning.templates.LearningProcess, task_lib.Task]:
  """Federated Dropout: clients train `plan`'s submodel of `task`'s model.

  The keyed composer (`learning/keyed.py`) of: the keyed distributor
  (`tff.federated_select` of each client's submodel, through the broadcast
  codec), the configured client work on the submodel, the registry's
  aggregator around a per-coordinate scatter mean, and the server optimizer.
  """
  initial_weights_fn = build_initial_weights_fn(task)
  model_weights_type = initial_weights_fn.type_signature.result
  sub_task = task.with_widths(
      plan.widths, plan.scales if ts.dropout.rescale else None)
  sub_weights_type = build_initial_weights_fn(
      sub_task).type_signature.result
  slicing = dropout_slicing.MaskSlicing(
      plan, ts.seed, ts.dropout.per_client_masks, ts.clients_per_round)
  distributor = keyed.build_keyed_distributor(
      model_weights_type, sub_weights_type, slicing, ts.broadcast)
  client_work = registry.build_client_work(ts, sub_task, sub_weights_type)
  aggregator = registry.build_aggregator(
      ts, slicing, model_weights_type.trainable).create(
          sub_weights_type.trainable, tff.TensorType(np.float32))
  finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
      registry.build_server_optimizer(ts.server), model_weights_type)
  process = keyed.compose_keyed_learning_process(
      initial_weights_fn, distributor, client_work, aggregator, finalizer)
  return process, sub_task


def build_tiered_training(ts: settings.TrainingSettings, task: task_lib.Task,
                          num_clients: int) -> tier_process.TieredTraining:
  """Device tiers (`tiers.*`): each tier trains its slice of `task`'s model.

  Per tier, the same pieces as Federated Dropout's, on the tier's model: the
  keyed distributor of the tier's slicing, the configured client work, and
  the registry's aggregator around `keyed.ScatterSumFactory` (partial sums);
  the server step adds the tiers' sums, the DP noise (`dp.mode=user`) once,
  divides per coordinate and applies the server optimizer
  (`tiers/process.py`).

  Args:
    ts: The training settings (`ts.tiers.active`).
    task: The global model's task.
    num_clients: The clients the run samples from (tiers are assigned over
      them).
  """
  tiers = ts.tiers
  initial_weights_fn = build_initial_weights_fn(task)
  model_weights_type = initial_weights_fn.type_signature.result
  model = task.keras_model_fn()
  models, pieces = [], []
  for index, tier in enumerate(tiers.tiers):
    plan = tier_slicing.tier_plan(model, tier)
    tier_task = task.with_widths(plan.widths,
                                 plan.scales if tiers.rescale else None)
    tier_type = build_initial_weights_fn(tier_task).type_signature.result
    slicing = tier_slicing.build_slicing(tiers.slicing, plan, ts.seed, index,
                                         ts.clients_per_round)
    pieces.append(tier_process.TierPieces(
        slicing=slicing,
        distributor=keyed.build_keyed_distributor(
            model_weights_type, tier_type, slicing, ts.broadcast),
        client_work=registry.build_client_work(ts, tier_task, tier_type),
        aggregator=registry.build_aggregator(
            ts, slicing, model_weights_type.trainable, partial=True).create(
                tier_type.trainable, tff.TensorType(np.float32))))
    models.append(tier_process.TierModel(
        tier, index, plan, tier_task,
        tier_slicing.deployed_units(tiers.slicing, plan, ts.seed)))
  finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
      registry.build_server_optimizer(ts.server), model_weights_type)
  noise = dp_factories.gaussian_noise(ts.dp) if ts.dp.user_level else None
  process = tier_process.TieredProcess(
      initial_weights_fn, [m.name for m in models], pieces, finalizer, noise)
  names = [m.name for m in models]
  return tier_process.TieredTraining(
      process, tuple(models),
      tier_assignment.assign_tiers(num_clients,
                                   [t.share for t in tiers.tiers], ts.seed),
      injects_faults=ts.faults.poisons,
      train_only=(names.index(tiers.train_only) if tiers.train_only
                  else None))


def build_local_layers_training(ts: settings.TrainingSettings,
                                task: task_lib.Task,
                                layers: str) -> Training:
  """FedPer: the layers of `layers` (`personalization/layers.py`) stay on
  the clients.

  The registry's pieces, on the shared layers only: the distributor and
  the finalizer on the shared `ModelWeights`, the aggregator on the shared
  update; the configured client work trains the whole model
  (`personalization/local_layers.py`).
  """
  initial_weights_fn = build_initial_weights_fn(task)
  model_weights_type = initial_weights_fn.type_signature.result
  split = local_layers.LayerSplit.of(task.keras_model_fn(), layers)
  shared_type = local_layers.build_select_shared(
      model_weights_type, split).type_signature.result
  distributor = registry.build_distributor(ts, shared_type)
  client_work = local_layers.build_local_layers_client_work(
      registry.build_client_work(ts, task, model_weights_type), split)
  aggregator = registry.build_aggregator(ts).create(
      shared_type.trainable, tff.TensorType(np.float32))
  finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
      registry.build_server_optimizer(ts.server), shared_type)
  process = local_layers.compose_local_layers_process(
      initial_weights_fn, distributor, client_work, aggregator, finalizer,
      split)
  return Training(process, task, local=split)


def build_pruned_training(ts: settings.TrainingSettings,
                          task: task_lib.Task) -> Training:
  """Federated pruning: the first phase's Training, with all `phases`.

  Each phase (`pruning/schedule.py`) is `pruning.process`'s composition of
  the configured client work on the phase's client model, the registry's
  aggregator on the compact update and the server optimizer.
  """
  layout = pruning_masks.build_layout(task.keras_model_fn(), ts.pruning)
  schedule = pruning_schedule.Schedule.from_settings(ts.pruning)
  initial_weights_fn = build_initial_weights_fn(task)
  finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
      registry.build_server_optimizer(ts.server),
      initial_weights_fn.type_signature.result)
  works = {}  # phases whose clients train the same model share its work

  def client_task(sparsity: float) -> task_lib.Task:
    return layout.client_task(task, sparsity)

  def build(sparsity: float) -> Training:
    sub_task = client_task(sparsity)
    key = layout.client_model_key(sparsity)
    if key not in works:
      weights_type = build_initial_weights_fn(sub_task).type_signature.result
      works[key] = (weights_type, registry.build_client_work(
          ts, sub_task, weights_type))
    weights_type, client_work = works[key]
    process = pruning_process.build_phase_process(
        layout=layout, sparsity=sparsity,
        initial_weights_fn=initial_weights_fn,
        client_weights_type=weights_type, client_work=client_work,
        aggregator=registry.build_aggregator(ts), finalizer=finalizer,
        codec=ts.broadcast, seed=ts.seed)
    return Training(process, sub_task, injects_faults=ts.faults.poisons)

  phases = pruning_phases.Phases(schedule, layout, build, client_task)
  return dataclasses.replace(phases.training(1), phases=phases)


def build_training(ts: settings.TrainingSettings,
                   task: task_lib.Task) -> Training:
  """The learning process of `ts`: plain, Federated Dropout or pruned
  (device tiers: `build_tiered_training`)."""
  if ts.tiers.active:
    raise ValueError('tiers.* is set: build it with build_tiered_training')
  if ts.pruning.active:
    return build_pruned_training(ts, task)
  if ts.cohort_size > 1:
    process, client_task, plan = build_cohort_learning_process(ts, task)
    return Training(process, client_task, plan, cohort_size=ts.cohort_size)
  plan = dropout_plan(ts, task)
  injects = ts.faults.poisons
  if plan is None:
    return Training(build_learning_process(ts, task), task,
                    injects_faults=injects)
  process, sub_task = build_dropout_learning_process(ts, task, plan)
  return Training(process, sub_task, plan, injects_faults=injects)


def build_evaluation(task: task_lib.Task):
  """TFF's federated evaluation of the task's model."""
  return tff.learning.algorithms.build_fed_eval(task.model_fn)
