"""FedPer (`algorithm=fedper`) as a program-loop algorithm.

FedAvg whose `fedper.layers` (the classifier head by default) stay on the
clients: the TFF process (`personalization/local_layers.py`) federates the
shared layers only, and each client's local layers are per-client program
state, like FedGKT's edge models — handed to the client when it is sampled,
replaced by what it trained, saved in every checkpoint (so a resumed run is
bit-identical) and never seen by the server.

Every client holds out part of its examples (`personalization.*`), and
`eval_loss`/`eval_accuracy` are the evaluation clients' own models (shared
layers + their local layers) on their own held-out parts, pooled over
examples: the server's model has no trained head to evaluate on a common
test split. A client never sampled evaluates with the initial local layers.
With `personalization.evaluate` the fine-tuning evaluation runs from the
same models.
"""

from __future__ import annotations

import collections

import numpy as np

from tff_compress.faults import rounds as fault_rounds
from tff_compress.faults import schedule as fault_schedule
from tff_compress.fedavg import algorithm
from tff_compress.fedavg import process as process_lib
from tff_compress.personalization import local_layers
from tff_compress.program import algorithm as algorithm_lib


class FedPer(algorithm.FedAvg):
  """FedAvg with client-local layers; program state = (process state, every
  client's local layers)."""

  RECEIVED_MODEL = ('the shared layers with the client\'s own local layers '
                    '(FedPer)')

  def _build_training(self) -> process_lib.Training:
    return process_lib.build_local_layers_training(
        self._ts, self.task, self._settings.fedper.layers)

  @property
  def _split(self) -> local_layers.LayerSplit:
    return self.training.local

  def local_params(self) -> int:
    """Parameters of the local layers (each client's own)."""
    weights = self.task.keras_model_fn().trainable_weights
    return sum(int(np.prod(weights[i].shape)) for i in self._split.local)

  def describe(self) -> str:
    local = self.local_params()
    return (super().describe() + '\n' +
            f'fedper: layers {self._settings.fedper.layers!r} stay on the '
            f'clients: {local:,} params each ({local / self.task.num_params:.1%}'
            ' of the model), never sent')

  def initial_state(self):
    process = self.training.process
    state = process.initialize()
    first = local_layers.initial_local_layers(
        process.get_model_weights(state), self._split)
    # Every phone starts from the model's initial layers.
    return collections.OrderedDict(
        process=state,
        local=[[a.copy() for a in first] for _ in range(self.num_clients)])

  def _model_weights(self, state):
    return self.training.process.get_model_weights(state['process'])

  def _evaluation_local_layers(self, state) -> list:
    return [state['local'][int(c)] for c in self.finetune_eval.clients]

  def run_round(self, state, round_num: int,
                picked: np.ndarray) -> algorithm_lib.RoundResult:
    epochs = self._ts.client.epochs
    examples = [epochs * self._sizes[i] for i in picked]
    flops = [n * self.task.train_flops_per_example for n in examples]
    # Faults are refused with FedPer (config): every sampled client reports.
    plan = fault_schedule.plan_round(
        self._ts.faults, self._run.seed, round_num, picked, examples,
        self._run.clients_per_round)
    out = self.training.process.next(
        state['process'], local_layers.client_inputs(
            self._client_data(round_num, picked),
            [state['local'][int(c)] for c in picked]))
    local = list(state['local'])
    for c, trained in zip(picked, out.local):
      local[int(c)] = [np.asarray(a) for a in trained]
    aggregator = out.metrics['aggregator']
    outcome = fault_rounds.RoundOutcome(
        state=out.state, metrics=out.metrics,
        bytes_down=int(out.metrics['distributor']['bytes_down']),
        bytes_up=int(aggregator['bytes_up']),
        zeroed=int(aggregator['zeroed']) if 'zeroed' in aggregator else None)
    new_state = collections.OrderedDict(process=out.state, local=local)
    return self._with_personalization(algorithm_lib.RoundResult(
        new_state, self._row(outcome, plan, flops)), round_num)

  def evaluate(self, state) -> tuple[dict, dict]:
    scores = self.finetune_eval.received_only(
        self._model_weights(state), self._evaluation_local_layers(state))
    return scores.pooled(), {}

  def summary(self, rows, participations: np.ndarray) -> dict:
    out = super().summary(rows, participations)
    local = self.local_params()
    out['fedper'] = {
        'local_layers': self._settings.fedper.layers,
        'local_params_per_client': local,
        'shared_params': self.task.num_params - local,
        'clients_never_sampled': int(np.sum(participations == 0)),
    }
    return out


def build(settings, data) -> FedPer:
  """The `algorithm=fedper` adapter of a run."""
  return FedPer(settings, data)
