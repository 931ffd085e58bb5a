"""FedAvg-family training as a program-loop algorithm.

Every TFF learning process this package builds (FedAvg, FedAvgM, FedAdam,
codecs, Federated Dropout, DP-FedAvg, DP-SGD, secure aggregation, client
faults) runs through this one adapter: it feeds each round the sampled
clients' data (datasets, or descriptors the remote workers build datasets
from), lets the fault schedule decide who reports (`faults/rounds.py`), and
reports the standard `metrics.csv` columns.
"""

from __future__ import annotations

import collections
import contextlib
import time
from typing import Iterator, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.cohorts import data as cohort_data
from tff_compress.data import federated_data
from tff_compress.data import store as store_lib
from tff_compress.faults import rounds as fault_rounds
from tff_compress.faults import schedule as fault_schedule
from tff_compress.fedavg import process as process_lib
from tff_compress.fedavg import settings as fedavg_settings
from tff_compress.learning import task as task_lib
from tff_compress.personalization import evaluation as p13n_evaluation
from tff_compress.personalization import split as p13n_split
from tff_compress.privacy import accounting
from tff_compress.program import algorithm as algorithm_lib
from tff_compress.program import run_dir
from tff_compress.program import sampling
from tff_compress.runtime import feed as feed_lib
from tff_compress.runtime import local as local_runtime
from tff_compress.runtime import remote as remote_runtime
from tff_compress.tiers import metrics as tier_metrics
from tff_compress.tiers import rounds as tier_rounds

EVAL_BATCH = 100


def eval_datasets(data: federated_data.FederatedData, num: int) -> list:
  """The test split cut into `num` evaluation clients (batches of 100)."""
  return [
      tf.data.Dataset.from_tensor_slices(
          collections.OrderedDict(x=data.test_x[a:b], y=data.test_y[a:b])
      ).batch(EVAL_BATCH)
      for a, b in federated_data.eval_bounds(len(data.test_y), num)
  ]


class FedAvg(algorithm_lib.Algorithm):
  """A FedAvg-family TFF learning process on a federated data set.

  With `personalization.evaluate`, every client holds out a part of its
  examples that training never sees (`personalization/split.py`) and the
  fine-tuning evaluation runs after the last round and every
  `personalization.every` rounds (`personalization/evaluation.py`).

  Args:
    settings: The run's settings (`config_lib.Settings`).
    data: The federated data set.
  """

  # What a client's received model is, in `summary.json` words.
  RECEIVED_MODEL = 'the global model'

  def __init__(self, settings, data: federated_data.FederatedData):
    self._settings = settings
    self._run = settings.run
    self._ts = fedavg_settings.TrainingSettings.of(settings)
    p13n = settings.personalization
    self.held_out = None
    if p13n.holds_out(self._run.algorithm):
      self.held_out = p13n_split.split_clients(data, p13n.test_fraction,
                                               self._run.seed)
      data = self.held_out.train
    self._data = data
    self._sizes = [data.client_size(c) for c in data.client_ids]
    self.task = task_lib.build_task(settings.model.name, data,
                                    seed=self._run.seed)
    # Device tiers: one pass per tier, and each tier's deployed model is
    # evaluated too (`tiers/`).
    self.tiered = self._ts.tiers.active
    if self.tiered:
      self.training = process_lib.build_tiered_training(
          self._ts, self.task, len(data.client_ids))
      self.tier_evaluations = tuple(process_lib.build_evaluation(t.task)
                                    for t in self.training.tiers)
    else:
      self.training = self._build_training()
      self.tier_evaluations = ()
    self._tier_evals_in_use = self.tier_evaluations
    self.evaluation = process_lib.build_evaluation(self.task)
    self.finetune_eval = None
    if self.held_out is not None:
      self.finetune_eval = p13n_evaluation.FinetuneEvaluation(
          p13n, self.task, self.held_out, self._run.seed, self._run.rounds,
          split=None if self.tiered else self.training.local,
          finetune=p13n.evaluate)
    self._eval_data = eval_datasets(data, self._run.eval_clients)
    self._feed: Optional[feed_lib.WorkerFeed] = None
    self._final_trainable: Optional[list] = None  # for the pruning report
    self._accountant = accounting.RunAccountant(
        settings.dp, clients_per_round=self._run.clients_per_round,
        batch_size=self._ts.client.batch_size,
        epochs=self._ts.client.epochs, client_sizes=tuple(self._sizes))

  def _build_training(self) -> process_lib.Training:
    return process_lib.build_training(self._ts, self.task)

  # ---- what the loop needs to know ----

  @property
  def num_clients(self) -> int:
    return len(self._data.client_ids)

  @property
  def sampled_per_round(self) -> int:
    return self._ts.faults.num_sampled(self._run.clients_per_round)

  @property
  def model_params(self) -> int:
    return self.task.num_params

  @property
  def client_model_params(self) -> int:
    if self.tiered:
      return tier_metrics.mean_client_params(self.training)
    phases = self.training.phases
    if phases is not None:  # the model clients train at the end
      return phases.client_task(self._run.rounds).num_params
    return self.training.client_task.num_params

  @property
  def metrics_columns(self) -> tuple[str, ...]:
    if self.tiered:
      return run_dir.METRICS_COLUMNS + run_dir.tier_columns(
          self.training.names)
    return run_dir.METRICS_COLUMNS

  def describe(self) -> str:
    d, task = self._data, self.task
    lines = [
        f'data {d.name}: {len(d.client_ids)} clients, {sum(self._sizes)} '
        f'train / {len(d.test_y)} test examples | model '
        f'{self._settings.model.name}: {task.num_params:,} params, '
        f'{task.train_flops_per_example / 1e6:.3g} MFLOPs/example to train']
    if self.tiered:
      lines.extend(tier_metrics.describe(self.training, self.task,
                                         self._ts.tiers))
    elif self.training.plan is not None:
      plan = self.training.plan
      sub = self.training.client_task
      lines.append(
          f'federated dropout ({self._ts.dropout.mask} masks): clients train '
          + ', '.join(f'{k} {v}' for k, v in plan.widths.items())
          + f' | {sub.num_params:,} params, '
          f'{task.train_flops_per_example / sub.train_flops_per_example:.2f}'
          'x fewer FLOPs/example')
    if not self.tiered and self.training.phases is not None:
      lines.append(self.training.phases.describe())
    if self.held_out is not None:
      p = self._settings.personalization
      lines.append(
          f'personalization: every client holds out {p.test_fraction:.0%} of '
          f'its examples; {len(self.finetune_eval.clients)} evaluation '
          'clients' + (f' fine-tune {p.epochs} epochs ({p.optimizer}, lr '
                       f'{p.learning_rate:g}, batch {p.batch_size}'
                       f'{", layers " + p.layers if p.layers else ""})'
                       if p.evaluate else ''))
    targets = self._settings.runtime.targets
    if targets:
      lines.append(f'{len(targets)} remote TFF workers: {", ".join(targets)}')
    return '\n'.join(lines)

  @contextlib.contextmanager
  def execution(self, log_dir: str) -> Iterator[None]:
    """The local worker, or the remote workers with worker-side data."""
    runtime = self._settings.runtime
    if not runtime.targets:
      with local_runtime.local_context(log_dir=log_dir):
        yield
      return
    store = store_lib.prepare_store(
        self._data, store_lib.resolve_data_dir(runtime.worker_data_dir))
    with remote_runtime.remote_context(
        runtime.targets, connect_timeout=runtime.connect_timeout,
        rpc_timeout=runtime.rpc_timeout) as cluster:
      feed_lib.check_workers(cluster, store)
      self._feed = feed_lib.WorkerFeed.build(
          self.training, self.evaluation, store,
          batch_size=self._ts.client.batch_size,
          epochs=self._ts.client.epochs,
          eval_clients=self._run.eval_clients, eval_batch_size=EVAL_BATCH)
      self._tier_evals_in_use = tuple(
          feed_lib.DescriptorProcess(e, feed_lib.evaluation_next(
              e.next, store, batch_size=EVAL_BATCH))
          for e in self.tier_evaluations)
      try:
        yield
      finally:
        self._feed = None
        self._tier_evals_in_use = self.tier_evaluations

  @property
  def _training(self) -> process_lib.Training:
    return self._feed.training if self._feed else self.training

  # ---- rounds ----

  def initial_state(self):
    return self._training.process.initialize()

  def _client_data(self, round_num: int, picked: np.ndarray) -> list:
    """Each picked client's dataset (or worker-side descriptor)."""
    out = []
    c = self._ts.client
    for index in picked:
      seed = sampling.shuffle_seed(self._run.seed, round_num, int(index))
      if self._feed:
        out.append(store_lib.train_descriptor(index, seed))
      else:
        x, y = self._data.client_arrays(self._data.client_ids[index])
        out.append(federated_data.make_client_dataset(
            x, y, batch_size=c.batch_size, epochs=c.epochs,
            shuffle_seed=seed))
    return out

  def run_round(self, state, round_num: int,
                picked: np.ndarray) -> algorithm_lib.RoundResult:
    epochs = self._ts.client.epochs
    examples = [epochs * self._sizes[i] for i in picked]
    if self.tiered:
      return self._run_tiered_round(state, round_num, picked, examples)
    training = self._training.at_round(round_num)
    if training.cohort_size > 1:
      return self._run_cohort_round(training, state, round_num, picked,
                                    examples)
    flops = [n * training.client_task.train_flops_per_example
             for n in examples]
    # Who reports (faults/schedule.py); only they enter process.next.
    plan = fault_schedule.plan_round(
        self._ts.faults, self._run.seed, round_num, picked, examples,
        self._run.clients_per_round)
    outcome = fault_rounds.run_round(
        training, state, plan, self._client_data(round_num, picked))
    bytes_down, extra = outcome.bytes_down, {}
    phases = self._training.phases
    if phases is not None:
      # Masks go only to the sampled clients that do not hold them.
      bytes_down += phases.mask_bytes_down(
          round_num, picked, lambda r: sampling.sample_clients(
              self.num_clients, self.sampled_per_round, self._run.seed, r))
      if outcome.metrics is not None:
        extra['sparsity'] = float(outcome.metrics['pruning']['sparsity'])
    row = self._row(outcome, plan, flops)
    row['bytes_down'] = bytes_down
    return self._with_personalization(
        algorithm_lib.RoundResult(outcome.state, row, extra), round_num)

  def _run_cohort_round(self, training: process_lib.Training, state,
                        round_num: int, picked: np.ndarray,
                        examples: Sequence[int]
                        ) -> algorithm_lib.RoundResult:
    """A round of cohorts: the picked clients, G at a time by size
    (`cohort_data.group`).

    On remote workers each cohort is a descriptor the worker builds the
    steps from. The cohort client work reports what the per-client
    aggregator would (`bytes_up`, `zeroed` under DP); every simulated
    client received the broadcast, so `bytes_down` is the per-cohort
    figure times K / cohorts.
    """
    c = self._ts.client
    cohorts = []
    for slots in cohort_data.group([self._sizes[i] for i in picked],
                                   training.cohort_size):
      indices = [int(picked[j]) for j in slots]
      seeds = [sampling.shuffle_seed(self._run.seed, round_num, i)
               for i in indices]
      if self._feed:  # the workers read and stack the clients' rows
        cohorts.append(store_lib.cohort_descriptor(indices, seeds, slots))
        continue
      clients = [(*self._data.client_arrays(self._data.client_ids[i]), s)
                 for i, s in zip(indices, seeds)]
      cohorts.append(cohort_data.cohort_dataset(
          clients, batch_size=c.batch_size, epochs=c.epochs, slots=slots))
    output = training.process.next(state, cohorts)
    m = output.metrics
    work = m['client_work']
    if 'bytes_down' in work:  # each client's own slice (Federated Dropout)
      bytes_down = int(work['bytes_down'])
    else:
      bytes_down = (int(m['distributor']['bytes_down']) // len(cohorts)
                    * len(picked))
    plan = fault_schedule.plan_round(
        self._ts.faults, self._run.seed, round_num, picked, examples,
        self._run.clients_per_round)
    row = {
        'train_loss': float(work['train']['loss']),
        'train_accuracy': float(work['train']['accuracy']),
        'bytes_down': bytes_down,
        'bytes_up': int(work['bytes_up']),
        'client_flops': float(np.mean(
            [n * training.client_task.train_flops_per_example
             for n in examples])),
        'zeroed': int(work['zeroed']) if self._ts.dp.user_level else None,
        **fault_rounds.columns(plan),
    }
    return self._with_personalization(
        algorithm_lib.RoundResult(output.state, row), round_num)

  def _row(self, outcome: fault_rounds.RoundOutcome,
           plan: fault_schedule.RoundPlan, flops: Sequence[float]) -> dict:
    """The round's `metrics.csv` values."""
    return {
        'train_loss': outcome.train_metric('loss'),
        'train_accuracy': outcome.train_metric('accuracy'),
        'bytes_down': outcome.bytes_down,
        'bytes_up': outcome.bytes_up,
        'client_flops': float(np.mean(flops)),
        'zeroed': outcome.zeroed,
        **fault_rounds.columns(plan),
    }

  def _model_weights(self, state) -> tff.learning.models.ModelWeights:
    """The server's model in the program state `state`."""
    return self._training.process.get_model_weights(state)

  def _evaluation_local_layers(self, state) -> Optional[list]:
    """FedPer: the evaluation clients' local layers (None for FedAvg)."""
    del state
    return None

  def _with_personalization(self, result: algorithm_lib.RoundResult,
                            round_num: int) -> algorithm_lib.RoundResult:
    """`result` with the fine-tuning evaluation if it is due this round."""
    if (not self._settings.personalization.evaluate or
        not self.finetune_eval.due(round_num)):
      return result
    t0 = time.monotonic()
    scores = self.finetune_eval.run(
        round_num, self._model_weights(result.state),
        self._evaluation_local_layers(result.state))
    result.row.update(scores.distribution())
    result.tables[p13n_evaluation.TABLE] = scores.table(round_num)
    result.extra['p13n_seconds'] = time.monotonic() - t0
    return result

  def _run_tiered_round(self, state, round_num: int, picked: np.ndarray,
                        examples: Sequence[int]) -> algorithm_lib.RoundResult:
    """A device-tier round: per-tier passes, per-tier columns."""
    training = self._training
    plan = fault_schedule.plan_round(
        self._ts.faults, self._run.seed, round_num, picked, examples,
        self._run.clients_per_round)
    tiered = tier_rounds.run_round(training, state, plan,
                                   self._client_data(round_num, picked))
    outcome = tiered.outcome
    row = {
        'train_loss': outcome.train_metric('loss'),
        'train_accuracy': outcome.train_metric('accuracy'),
        'bytes_down': outcome.bytes_down,
        'bytes_up': outcome.bytes_up,
        'zeroed': outcome.zeroed,
        **fault_rounds.columns(plan),
        **tier_metrics.round_columns(training, tiered, examples),
    }
    return self._with_personalization(
        algorithm_lib.RoundResult(outcome.state, row), round_num)

  def evaluate(self, state) -> tuple[dict, dict]:
    evaluation = self._feed.evaluation if self._feed else self.evaluation
    data = self._feed.eval_descriptors if self._feed else self._eval_data
    weights = self._model_weights(state)
    row = _evaluate(evaluation, weights, data)
    for tier, tier_eval in zip(self.training.tiers if self.tiered else (),
                               self._tier_evals_in_use):
      figures = _evaluate(tier_eval, tier.deployed(weights), data)
      for key, value in figures.items():
        row[run_dir.tier_column(tier.name, key)] = value
    return row, {}

  def epsilon(self, round_num: int,
              participations: np.ndarray) -> Optional[float]:
    return self._accountant.epsilon(round_num, participations)

  def final_weights(self, state) -> list[np.ndarray]:
    weights = self._model_weights(state)
    self._final_trainable = [np.asarray(w) for w in weights.trainable]
    return [np.asarray(w) for w in tf.nest.flatten(
        (weights.trainable, weights.non_trainable))]

  def summary(self, rows: Sequence[dict],
              participations: np.ndarray) -> dict:
    out = {}
    if self._accountant.mode != 'none' and rows:
      zeroed = [int(r['zeroed']) for r in rows
                if r.get('zeroed') not in (None, '')]
      out.update({
          'epsilon': float(rows[-1]['epsilon']),
          'privacy': self._accountant.statement(len(rows), participations),
          'zeroed_updates': sum(zeroed) if zeroed else None,
      })
    if self._ts.faults.active:
      out['faults'] = fault_rounds.summarize(rows)
    if self.tiered:
      out.update(tier_metrics.summarize(self.training, rows))
    personalization = p13n_evaluation.summary_block(rows,
                                                    self.RECEIVED_MODEL)
    if personalization is not None:
      out['personalization'] = personalization
    phases = None if self.tiered else self.training.phases
    if phases is not None and self._final_trainable is not None:
      out['pruning'] = phases.report(self._final_trainable)
    return out


def _evaluate(evaluation, weights, data) -> dict:
  """`eval_loss`/`eval_accuracy` of `weights` on the evaluation clients."""
  eval_state = evaluation.set_model_weights(evaluation.initialize(), weights)
  current = evaluation.next(eval_state, data).metrics['client_work'][
      'eval']['current_round_metrics']
  return {'eval_loss': float(current['loss']),
          'eval_accuracy': float(current['accuracy'])}


def build(settings, data: federated_data.FederatedData) -> FedAvg:
  """The `algorithm=fedavg` adapter of a run."""
  return FedAvg(settings, data)
