"""Fine-tuning evaluation: the model a client received vs after k local epochs.

Each evaluation client (a fixed seeded sample of the training clients,
`split.evaluation_clients`) receives the model, scores it on its own
held-out part, fine-tunes a copy on its own train part for
`personalization.epochs` epochs with the configured optimizer, and scores
the fine-tuned copy on the same held-out part. Only the per-client scores
leave the client (as in TFF's personalization evaluation: they are the
figures being reported); no example does.

**TFF's computation where it fits.** For a FedAvg run this is exactly
`tff.learning.algorithms.build_personalization_eval_computation` (server
model broadcast, one `personalize_fn` strategy named `finetuned`, per-client
metrics collected by its reservoir sampling with room for every client).
Under FedPer a client starts from the shared layers it receives *and its
own local layers*, which TFF's computation (one broadcast model, clients'
input = two datasets) cannot express; `build_local_evaluation` is the same
computation with the local layers as a client input: same strategy and
baseline functions, same client steps (baseline on the received model,
then each strategy from the received model), same collection. A test pins
it to TFF's numbers when the local layers equal the server's.

**What is reported** (per evaluation, `metrics.csv` columns `p13n_*`,
per client in `personalization.csv`): over the evaluation clients, the
unweighted mean and the 10th/90th percentiles (linear interpolation) of the
per-client accuracy of the received model (`global_*`) and of the
fine-tuned model (`finetuned_*`), and `worse_share`, the fraction of
clients whose fine-tuned accuracy is strictly below their received
model's.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress.data import federated_data
from tff_compress.learning import task as task_lib
from tff_compress.personalization import layers as layers_lib
from tff_compress.personalization import local_layers
from tff_compress.personalization import settings as personal_settings
from tff_compress.personalization import split as split_lib
from tff_compress.program import run_dir

EVAL_BATCH = 100
FINETUNED = 'finetuned'
BASELINE = 'baseline_metrics'  # TFF's name for the received model's metrics

# `metrics.csv` columns of an evaluation, and its per-client table.
COLUMNS = tuple(c for c in run_dir.METRICS_COLUMNS if c.startswith('p13n_'))
TABLE = 'personalization'


class EvaluationOrderError(RuntimeError):
  """Collected per-client metrics do not line up with the clients sent."""


def build_optimizer(p: personal_settings.PersonalizationSettings
                    ) -> tff.learning.optimizers.Optimizer:
  """The fine-tuning optimizer of `personalization.*`."""
  if p.optimizer == 'adam':
    return tff.learning.optimizers.build_adam(learning_rate=p.learning_rate)
  return tff.learning.optimizers.build_sgdm(
      learning_rate=p.learning_rate, momentum=p.momentum or None)


def evaluate_model(model: tff.learning.models.VariableModel,
                   data: tf.data.Dataset) -> collections.OrderedDict:
  """Mean cross-entropy, accuracy and example count of `model` on unbatched
  `data` (`x`, `y`), in inference mode."""

  def step(acc, batch):
    logits = model.predict_on_batch(batch['x'], training=False)
    y = tf.cast(batch['y'], tf.int64)
    loss = tf.keras.losses.sparse_categorical_crossentropy(
        y, logits, from_logits=True)
    correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1), y), tf.float32)
    return (acc[0] + tf.reduce_sum(loss), acc[1] + tf.reduce_sum(correct),
            acc[2] + tf.shape(y, out_type=tf.int64)[0])

  loss, correct, n = data.batch(EVAL_BATCH).reduce(
      (tf.constant(0.0), tf.constant(0.0), tf.constant(0, tf.int64)), step)
  count = tf.cast(n, tf.float32)
  return collections.OrderedDict(
      loss=tf.math.divide_no_nan(loss, count),
      accuracy=tf.math.divide_no_nan(correct, count),
      num_examples=n)


def build_finetune_fn(p: personal_settings.PersonalizationSettings,
                      tuned: Optional[Sequence[int]] = None
                      ) -> Callable[[], Callable]:
  """TFF's `personalize_fn` builder: fine-tune, then score on the test data.

  The returned function takes (model with the received weights, unbatched
  train data already in fine-tuning order — `epochs` passes —, unbatched
  test data), runs one optimizer step per `batch_size` examples on the
  trainable variables at positions `tuned` (None: all), and returns
  `evaluate_model` on the test data plus `train_examples`, the examples
  the steps saw.
  """
  batch_size = p.batch_size

  def builder():
    optimizer = build_optimizer(p)

    @tf.function
    def finetune(model, train_data, test_data):
      variables = list(model.trainable_variables)
      if tuned is not None:
        variables = [variables[i] for i in tuned]
      specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in variables)

      def step(state, batch):
        opt_state, seen = state
        with tf.GradientTape() as tape:
          out = model.forward_pass(batch, training=True)
        grads = tape.gradient(out.loss, variables)
        opt_state, new = optimizer.next(opt_state, tuple(variables),
                                        tuple(grads))
        for v, w in zip(variables, new):
          v.assign(w)
        return opt_state, seen + tf.shape(batch['y'], out_type=tf.int64)[0]

      _, seen = train_data.batch(batch_size).reduce(
          (optimizer.initialize(specs), tf.constant(0, tf.int64)), step)
      metrics = evaluate_model(model, test_data)
      metrics['train_examples'] = seen
      return metrics

    return finetune

  return builder


def _strategies(p, tuned, finetune: bool) -> collections.OrderedDict:
  if not finetune:
    return collections.OrderedDict()
  return collections.OrderedDict([(FINETUNED, build_finetune_fn(p, tuned))])


def build_global_evaluation(task: task_lib.Task,
                            p: personal_settings.PersonalizationSettings,
                            num_clients: int,
                            tuned: Optional[Sequence[int]] = None
                            ) -> tff.Computation:
  """TFF's personalization evaluation of a broadcast model (module doc).

  `(ModelWeights@SERVER, {train_data, test_data}@CLIENTS) ->
  OrderedDict(baseline_metrics=..., finetuned=...)@SERVER`, each metric a
  [num_clients] tensor in client order.
  """
  return tff.learning.algorithms.build_personalization_eval_computation(
      task.model_fn, _strategies(p, tuned, True), evaluate_model,
      max_num_clients=num_clients)


def build_local_evaluation(task: task_lib.Task,
                           p: personal_settings.PersonalizationSettings,
                           split: local_layers.LayerSplit, num_clients: int,
                           tuned: Optional[Sequence[int]] = None,
                           finetune: bool = True) -> tff.Computation:
  """The same evaluation when clients hold local layers (FedPer).

  `(shared ModelWeights@SERVER, {train_data, test_data, local}@CLIENTS) ->
  OrderedDict(baseline_metrics=...[, finetuned=...])@SERVER`: the server
  broadcasts only the shared layers; each client starts from them and its
  own local layers. `finetune=False` scores the received model only (the
  train data are then not read).
  """
  strategies = _strategies(p, tuned, finetune)
  whole_type = tff.learning.models.weights_type_from_model(task.model_fn)
  shared_type = local_layers.build_select_shared(
      whole_type, split).type_signature.result
  # One unbatched example (TFF's evaluation takes unbatched datasets).
  element = tff.types.tensorflow_to_type(collections.OrderedDict(
      (k, tf.TensorSpec(v.shape[1:], v.dtype))
      for k, v in task.input_spec.items()))
  client_type = tff.StructWithPythonType(
      [('train_data', tff.SequenceType(element)),
       ('test_data', tff.SequenceType(element)),
       ('local', local_layers.local_type(whole_type, split))],
      collections.OrderedDict)

  @tff.tensorflow.computation(shared_type, client_type)
  def client_eval(shared, client_input):
    received = local_layers.merged_model_weights(split, shared,
                                                 client_input['local'])
    model = task.model_fn()
    weights = tff.learning.models.ModelWeights.from_model(model)
    # As TFF's client computation: strategies are built (their variables
    # created) outside the tf.function that runs them.
    fns = collections.OrderedDict(
        (name, build()) for name, build in strategies.items())

    @tf.function
    def run():
      def assign():
        tf.nest.map_structure(lambda v, t: v.assign(t), weights, received)

      assign()
      out = collections.OrderedDict()
      out[BASELINE] = evaluate_model(model, client_input['test_data'])
      for name, fn in fns.items():
        assign()
        out[name] = fn(model, client_input['train_data'],
                       client_input['test_data'])
      return out

    return run()

  collect = tff.aggregators.UnweightedReservoirSamplingFactory(
      sample_size=num_clients).create(client_eval.type_signature.result)

  @tff.federated_computation(tff.FederatedType(shared_type, tff.SERVER),
                             tff.FederatedType(client_type, tff.CLIENTS))
  def evaluation(shared, client_input):
    metrics = tff.federated_map(
        client_eval, (tff.federated_broadcast(shared), client_input))
    return collect.next(collect.initialize(), metrics).result

  return evaluation


@dataclasses.dataclass(frozen=True)
class Scores:
  """Per-client results of one evaluation, in evaluation-client order."""

  clients: np.ndarray
  train_examples: np.ndarray
  test_examples: np.ndarray
  global_loss: np.ndarray
  global_accuracy: np.ndarray
  finetuned_loss: Optional[np.ndarray] = None
  finetuned_accuracy: Optional[np.ndarray] = None

  def distribution(self) -> dict:
    """The `COLUMNS` figures (module docstring)."""
    g, f = self.global_accuracy, self.finetuned_accuracy
    return {
        'p13n_global_mean': float(np.mean(g)),
        'p13n_global_p10': float(np.percentile(g, 10)),
        'p13n_global_p90': float(np.percentile(g, 90)),
        'p13n_finetuned_mean': float(np.mean(f)),
        'p13n_finetuned_p10': float(np.percentile(f, 10)),
        'p13n_finetuned_p90': float(np.percentile(f, 90)),
        'p13n_worse_share': float(np.mean(f < g)),
    }

  def pooled(self) -> dict:
    """Example-weighted loss/accuracy of the received models (eval_*)."""
    n = self.test_examples.astype(np.float64)
    return {'eval_loss': float(np.sum(self.global_loss * n) / n.sum()),
            'eval_accuracy': float(np.sum(self.global_accuracy * n) / n.sum())}

  def table(self, round_num: int) -> list[dict]:
    """`personalization.csv` rows."""
    rows = []
    for i, c in enumerate(self.clients):
      rows.append({
          'round': round_num, 'client': int(c),
          'train_examples': int(self.train_examples[i]),
          'test_examples': int(self.test_examples[i]),
          'global_loss': float(self.global_loss[i]),
          'global_accuracy': float(self.global_accuracy[i]),
          'finetuned_loss': float(self.finetuned_loss[i]),
          'finetuned_accuracy': float(self.finetuned_accuracy[i])})
    return rows


class FinetuneEvaluation:
  """Runs the evaluation of a run's clients (driver side).

  Args:
    p: The `personalization.*` settings.
    task: The model.
    held_out: The clients' train/held-out split.
    seed: The config seed.
    rounds: The run's number of rounds.
    split: FedPer's local layers, or None (FedAvg).
    finetune: Build the fine-tuning evaluation (`run`); without it only
      FedPer's `received_only` is available.
  """

  def __init__(self, p: personal_settings.PersonalizationSettings,
               task: task_lib.Task, held_out: split_lib.HeldOutData,
               seed: int, rounds: int,
               split: Optional[local_layers.LayerSplit] = None,
               finetune: bool = True):
    self._p, self._held_out, self._seed = p, held_out, seed
    self._rounds, self._split = rounds, split
    data = held_out.train
    self.clients = split_lib.evaluation_clients(
        len(data.client_ids), p.eval_clients, seed)
    tuned = (layers_lib.resolve(p.layers, task.keras_model_fn())
             if p.layers else None)
    n = len(self.clients)
    self._test_sizes = np.array(
        [len(held_out.held_out(int(c))[1]) for c in self.clients])
    self._train_sizes = np.array(
        [data.client_size(data.client_ids[int(c)]) for c in self.clients])
    self._finetune = self._received_only = None
    if finetune:
      self._finetune = (
          build_global_evaluation(task, p, n, tuned) if split is None else
          build_local_evaluation(task, p, split, n, tuned))
    if split is not None:
      self._received_only = build_local_evaluation(task, p, split, n, tuned,
                                                   finetune=False)

  def due(self, round_num: int) -> bool:
    """Evaluate after `round_num`? (every `every` rounds and the last)."""
    every = self._p.every
    return round_num == self._rounds or bool(every and round_num % every == 0)

  def _inputs(self, round_num: int, local: Optional[Sequence], train: bool
              ) -> list:
    data = self._held_out.train
    out = []
    for i, c in enumerate(self.clients):
      c = int(c)
      x, y = data.client_arrays(data.client_ids[c])
      if train:
        train_ds = federated_data.make_client_dataset(
            x, y, batch_size=self._p.batch_size, epochs=self._p.epochs,
            shuffle_seed=split_lib.finetune_seed(self._seed, round_num, c)
        ).unbatch()
      else:
        train_ds = tf.data.Dataset.from_tensor_slices(
            collections.OrderedDict(x=x[:0], y=y[:0]))
      tx, ty = self._held_out.held_out(c)
      item = collections.OrderedDict(
          train_data=train_ds,
          test_data=tf.data.Dataset.from_tensor_slices(
              collections.OrderedDict(x=tx, y=ty)))
      if local is not None:
        item['local'] = list(local[i])
      out.append(item)
    return out

  def _received(self, weights) -> tff.learning.models.ModelWeights:
    if self._split is None:
      return weights
    return local_layers.shared_model_weights(self._split, weights)

  def _check_order(self, metrics) -> None:
    got = np.asarray(metrics['num_examples'])
    if not np.array_equal(got, self._test_sizes):
      raise EvaluationOrderError(
          f'held-out sizes per position {got.tolist()} != the evaluation '
          f'clients\' {self._test_sizes.tolist()}')

  def run(self, round_num: int, weights,
          local: Optional[Sequence] = None) -> Scores:
    """Fine-tuning evaluation of the model `weights` after `round_num`.

    Args:
      round_num: The round just finished (seeds the fine-tuning order).
      weights: The server's `ModelWeights`.
      local: FedPer: each evaluation client's local layers, in
        `self.clients` order.
    """
    out = self._finetune(self._received(weights),
                         self._inputs(round_num, local, train=True))
    base, tuned = out[BASELINE], out[FINETUNED]
    self._check_order(base)
    expected = self._train_sizes * self._p.epochs
    if not np.array_equal(np.asarray(tuned['train_examples']), expected):
      raise EvaluationOrderError(
          f'fine-tuning examples per position '
          f'{np.asarray(tuned["train_examples"]).tolist()} != '
          f'{expected.tolist()}')
    return Scores(self.clients, self._train_sizes, self._test_sizes,
                  np.asarray(base['loss']), np.asarray(base['accuracy']),
                  np.asarray(tuned['loss']), np.asarray(tuned['accuracy']))

  def received_only(self, weights, local: Sequence) -> Scores:
    """FedPer: each evaluation client's own model, not fine-tuned."""
    out = self._received_only(self._received(weights),
                              self._inputs(0, local, train=False))
    base = out[BASELINE]
    self._check_order(base)
    return Scores(self.clients, self._train_sizes, self._test_sizes,
                  np.asarray(base['loss']), np.asarray(base['accuracy']))


def summary_block(rows: Sequence[dict], baseline: str) -> Optional[dict]:
  """`summary.json`'s `personalization` block: the last evaluation's figures
  from `metrics.csv` rows (None if no round was evaluated).

  Args:
    rows: `metrics.csv` rows (strings).
    baseline: What the received model is, in words.
  """
  evaluated = [r for r in rows if r.get('p13n_global_mean') not in (None, '')]
  if not evaluated:
    return None
  last = evaluated[-1]
  out = {k[len('p13n_'):]: float(last[k]) for k in COLUMNS}
  out['gain'] = out['finetuned_mean'] - out['global_mean']
  out['round'] = int(last['round'])
  out['baseline'] = baseline
  return out
