"""Builds the learning process from settings: TFF's five named stages."""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
import tensorflow_federated as tff

from tff_compress.dropout import slicing as dropout_slicing
from tff_compress.dropout import submodel as submodel_lib
from tff_compress.faults import client_work as fault_client_work
from tff_compress.fedavg import registry
from tff_compress.fedavg import settings
from tff_compress.learning import keyed
from tff_compress.learning import task as task_lib


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


@dataclasses.dataclass(frozen=True)
class Training:
  """A learning process plus what the driver needs to feed and report it."""

  process: tff.learning.templates.LearningProcess
  client_task: task_lib.Task  # the model a client trains (a submodel?)
  plan: Optional[submodel_lib.SubmodelPlan] = None
  injects_faults: bool = False  # client work poisons per fault code

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


def build_training(ts: settings.TrainingSettings,
                   task: task_lib.Task) -> Training:
  """The learning process of `ts`, with or without Federated Dropout."""
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
