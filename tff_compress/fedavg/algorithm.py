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
from typing import Iterator, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.data import federated_data
from tff_compress.data import store as store_lib
from tff_compress.faults import rounds as fault_rounds
from tff_compress.faults import schedule as fault_schedule
from tff_compress.fedavg import process as process_lib
from tff_compress.fedavg import settings as fedavg_settings
from tff_compress.learning import task as task_lib
from tff_compress.privacy import accounting
from tff_compress.program import algorithm as algorithm_lib
from tff_compress.program import sampling
from tff_compress.runtime import feed as feed_lib
from tff_compress.runtime import local as local_runtime
from tff_compress.runtime import remote as remote_runtime

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

  Args:
    settings: The run's settings (`config_lib.Settings`).
    data: The federated data set.
  """

  def __init__(self, settings, data: federated_data.FederatedData):
    self._settings = settings
    self._run = settings.run
    self._ts = fedavg_settings.TrainingSettings.of(settings)
    self._data = data
    self._sizes = [data.client_size(c) for c in data.client_ids]
    self.task = task_lib.build_task(settings.model.name, data,
                                    seed=self._run.seed)
    self.training = process_lib.build_training(self._ts, self.task)
    self.evaluation = process_lib.build_evaluation(self.task)
    self._eval_data = eval_datasets(data, self._run.eval_clients)
    self._feed: Optional[feed_lib.WorkerFeed] = None
    self._accountant = accounting.RunAccountant(
        settings.dp, clients_per_round=self._run.clients_per_round,
        batch_size=self._ts.client.batch_size,
        epochs=self._ts.client.epochs, client_sizes=tuple(self._sizes))

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
    return self.training.client_task.num_params

  def describe(self) -> str:
    d, task = self._data, self.task
    lines = [
        f'data {d.name}: {len(d.client_ids)} clients, {sum(self._sizes)} '
        f'train / {len(d.test_y)} test examples | model '
        f'{self._settings.model.name}: {task.num_params:,} params, '
        f'{task.train_flops_per_example / 1e6:.2f} MFLOPs/example to train']
    plan = self.training.plan
    if plan is not None:
      sub = self.training.client_task
      lines.append(
          f'federated dropout ({self._ts.dropout.mask} masks): clients train '
          + ', '.join(f'{k} {v}' for k, v in plan.widths.items())
          + f' | {sub.num_params:,} params, '
          f'{task.train_flops_per_example / sub.train_flops_per_example:.2f}'
          'x fewer FLOPs/example')
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
      try:
        yield
      finally:
        self._feed = None

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
    training = self._training
    epochs = self._ts.client.epochs
    examples = [epochs * self._sizes[i] for i in picked]
    flops = [n * training.client_task.train_flops_per_example
             for n in examples]
    # Who reports (faults/schedule.py); only they enter process.next.
    plan = fault_schedule.plan_round(
        self._ts.faults, self._run.seed, round_num, picked, examples,
        self._run.clients_per_round)
    outcome = fault_rounds.run_round(
        training, state, plan, self._client_data(round_num, picked))
    return algorithm_lib.RoundResult(outcome.state, {
        'train_loss': outcome.train_metric('loss'),
        'train_accuracy': outcome.train_metric('accuracy'),
        'bytes_down': outcome.bytes_down,
        'bytes_up': outcome.bytes_up,
        'client_flops': float(np.mean(flops)),
        'zeroed': outcome.zeroed,
        **fault_rounds.columns(plan),
    })

  def evaluate(self, state) -> tuple[dict, dict]:
    evaluation = self._feed.evaluation if self._feed else self.evaluation
    data = self._feed.eval_descriptors if self._feed else self._eval_data
    eval_state = evaluation.set_model_weights(
        evaluation.initialize(),
        self._training.process.get_model_weights(state))
    current = evaluation.next(eval_state, data).metrics['client_work'][
        'eval']['current_round_metrics']
    return {'eval_loss': float(current['loss']),
            'eval_accuracy': float(current['accuracy'])}, {}

  def epsilon(self, round_num: int,
              participations: np.ndarray) -> Optional[float]:
    return self._accountant.epsilon(round_num, participations)

  def final_weights(self, state) -> list[np.ndarray]:
    weights: tff.learning.models.ModelWeights = (
        self._training.process.get_model_weights(state))
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
    return out


def build(settings, data: federated_data.FederatedData) -> FedAvg:
  """The `algorithm=fedavg` adapter of a run."""
  return FedAvg(settings, data)
