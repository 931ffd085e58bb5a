"""Builds the learning process from a config: TFF's five named stages."""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import tensorflow_federated as tff

from tff_compress.dropout import submodel as submodel_lib
from tff_compress.learning import dropout_process
from tff_compress.learning import encoded
from tff_compress.learning import registry
from tff_compress.learning import task as task_lib


def build_initial_weights_fn(task: task_lib.Task) -> tff.Computation:
  """Server computation returning the seeded initial `ModelWeights`."""

  @tff.tensorflow.computation()
  def initial_model_weights_fn():
    return tff.learning.models.ModelWeights.from_model(task.model_fn())

  return initial_model_weights_fn


def build_learning_process(
    cfg, task: task_lib.Task) -> tff.learning.templates.LearningProcess:
  """distributor -> client work -> aggregator -> finalizer, from `cfg`."""
  initial_weights_fn = build_initial_weights_fn(task)
  model_weights_type = initial_weights_fn.type_signature.result
  distributor = registry.build_distributor(cfg, model_weights_type)
  client_work = registry.CLIENT_WORKS[cfg.client.work](
      cfg, task, model_weights_type)
  aggregator = registry.build_aggregator(cfg).create(
      model_weights_type.trainable, tff.TensorType(np.float32))
  finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
      registry.SERVER_OPTIMIZERS[cfg.server.optimizer](cfg),
      model_weights_type)
  return tff.learning.templates.compose_learning_process(
      initial_weights_fn, distributor, client_work, aggregator, finalizer)


@dataclasses.dataclass(frozen=True)
class Training:
  """A learning process plus what the driver needs to feed and report it."""

  process: tff.learning.templates.LearningProcess
  client_task: task_lib.Task  # the model a client trains (a submodel?)
  plan: Optional[submodel_lib.SubmodelPlan] = None

  def client_inputs(self, datasets: list) -> list:
    """`process.next`'s client data for the sampled clients, in slot order."""
    if self.plan is None:
      return list(datasets)
    return dropout_process.client_inputs(datasets)


def dropout_plan(cfg, task: task_lib.Task
                 ) -> Optional[submodel_lib.SubmodelPlan]:
  """The submodel plan of `dropout.*`, or None when every unit is kept."""
  per_layer = submodel_lib.parse_per_layer(cfg.dropout.per_layer)
  if cfg.dropout.keep == 1.0 and not per_layer:
    return None
  model = task.keras_model_fn()
  plan = submodel_lib.build_plan(
      model, submodel_lib.keep_fractions(model, cfg.dropout.keep, per_layer))
  return None if plan.is_identity else plan


def build_dropout_learning_process(
    cfg, task: task_lib.Task, plan: submodel_lib.SubmodelPlan
) -> tuple[tff.learning.templates.LearningProcess, task_lib.Task]:
  """Federated Dropout: clients train `plan`'s submodel of `task`'s model."""
  initial_weights_fn = build_initial_weights_fn(task)
  model_weights_type = initial_weights_fn.type_signature.result
  sub_task = task.with_widths(plan.widths)
  sub_weights_type = build_initial_weights_fn(
      sub_task).type_signature.result
  client_work = registry.CLIENT_WORKS[cfg.client.work](
      cfg, sub_task, sub_weights_type)
  finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
      registry.SERVER_OPTIMIZERS[cfg.server.optimizer](cfg),
      model_weights_type)
  process = dropout_process.build_dropout_process(
      initial_weights_fn=initial_weights_fn,
      plan=plan,
      sub_model_weights_type=sub_weights_type,
      client_work=client_work,
      finalizer=finalizer,
      broadcast=encoded.CodecConfig.from_config('broadcast', cfg.broadcast),
      uplink=encoded.CodecConfig.from_config('uplink', cfg.uplink),
      seed=cfg.seed,
      clients_per_round=cfg.clients_per_round,
      per_client_masks=cfg.dropout.mask == 'per_client',
      client_data_type=client_work.next.type_signature.parameter[2].member,
  )
  return process, sub_task


def build_training(cfg, task: task_lib.Task) -> Training:
  """The learning process of `cfg`, with or without Federated Dropout."""
  plan = dropout_plan(cfg, task)
  if plan is None:
    return Training(build_learning_process(cfg, task), task)
  process, sub_task = build_dropout_learning_process(cfg, task, plan)
  return Training(process, sub_task, plan)


def build_evaluation(task: task_lib.Task):
  """TFF's federated evaluation of the task's model."""
  return tff.learning.algorithms.build_fed_eval(task.model_fn)
