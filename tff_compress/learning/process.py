"""Builds the learning process from a config: TFF's five named stages."""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
import tensorflow_federated as tff

from tff_compress.dropout import submodel as submodel_lib
from tff_compress.faults import client_work as fault_client_work
from tff_compress.faults import schedule as fault_schedule
from tff_compress.learning import dropout_process
from tff_compress.learning import encoded
from tff_compress.learning import registry
from tff_compress.learning import task as task_lib
from tff_compress.privacy import factories as dp_factories


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
  client_work = registry.build_client_work(cfg, task, model_weights_type)
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
  sub_task = task.with_widths(
      plan.widths, plan.scales if cfg.dropout.rescale else None)
  sub_weights_type = build_initial_weights_fn(
      sub_task).type_signature.result
  client_work = registry.build_client_work(cfg, sub_task, sub_weights_type)
  finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
      registry.SERVER_OPTIMIZERS[cfg.server.optimizer](cfg),
      model_weights_type)
  process = dropout_process.build_dropout_process(
      **_dropout_privacy(cfg),
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


def _dropout_privacy(cfg) -> dict:
  """DP-FedAvg pieces of the dropout process (`dp.mode=user`).

  Noise is added by TFF's `DifferentiallyPrivateFactory` to the sum of the
  scattered (global-shape) updates; its query averages over the expected K
  clients, so `sum_scale` = K turns it back into a sum before the
  per-coordinate count average. With a fixed clip the client guarantees the
  decoded submodel update has norm <= clip (`privacy/bounded.py`); with
  adaptive clipping the clip of the round lives in the aggregator state and
  TFF's factory clips the decoded, scattered update itself.
  """
  if cfg.dp.mode != 'user':
    return {}
  return dict(
      sum_factory=tff.aggregators.DifferentiallyPrivateFactory(
          dp_factories.dp_query(cfg)),
      sum_scale=float(cfg.clients_per_round),
      zeroing_norm=float(cfg.dp.zeroing_norm),
      client_clip=None if cfg.dp.adaptive else float(cfg.dp.clip))


def build_training(cfg, task: task_lib.Task) -> Training:
  """The learning process of `cfg`, with or without Federated Dropout."""
  plan = dropout_plan(cfg, task)
  injects = fault_schedule.FaultSpec.from_config(cfg.faults).poisons
  if plan is None:
    return Training(build_learning_process(cfg, task), task,
                    injects_faults=injects)
  process, sub_task = build_dropout_learning_process(cfg, task, plan)
  return Training(process, sub_task, plan, injects_faults=injects)


def build_evaluation(task: task_lib.Task):
  """TFF's federated evaluation of the task's model."""
  return tff.learning.algorithms.build_fed_eval(task.model_fn)
