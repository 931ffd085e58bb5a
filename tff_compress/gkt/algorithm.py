"""FedGKT and FedAvg-BN as program-loop algorithms.

The run directory has the same contract as every other run
(`program/loop.py`). FedGKT's program state is the server's state plus every
client's state (edge model, its optimizer state, the server logits it holds):
a client keeps its edge model between its rounds, so a checkpoint keeps it
too.

`metrics.csv` columns for FedGKT: `train_loss`/`train_accuracy` are the
server model's (the large model being trained) over its epochs of the round;
`eval_*` is the deployed pipeline (a client's stem -> feature codec -> server
model) on the test split; `bytes_up` = features + logits + labels + client
keys, `bytes_down` = the server logits each client received;
`client_flops` = the edge model's training and feature extraction. The edge
models' own losses/accuracies go to TensorBoard and `summary.json`.
"""

from __future__ import annotations

import collections
import functools
from typing import Sequence

import numpy as np

from tff_compress.data import federated_data
from tff_compress.fedavg import registry as fedavg_registry
from tff_compress.gkt import codec
from tff_compress.gkt import fedavg_bn
from tff_compress.gkt import process as gkt_process
from tff_compress.learning import task as task_lib
from tff_compress.program import algorithm as algorithm_lib
from tff_compress.program import sampling
from tff_compress.runtime import local as local_runtime


# Tracing FedGKT's computations takes tens of seconds; runs in one process
# with the same settings (tests, resumed runs) share them.
_build_gkt_process = functools.lru_cache(maxsize=4)(
    gkt_process.build_gkt_process)


def _ratio(a: float, b: float) -> float:
  return a / b if b else 0.0


def _loss_accuracy(sums, prefix: str) -> dict:
  """{prefix_loss, prefix_accuracy} from loss_sum / correct / count sums."""
  return {f'{prefix}_loss': _ratio(sums['loss_sum'], sums['count']),
          f'{prefix}_accuracy': _ratio(sums['correct'], sums['count'])}


def _client_data(seed: int, data: federated_data.FederatedData,
                 round_num: int, picked) -> list[collections.OrderedDict]:
  """OrderedDict(x, y, seed) of each picked client for this round.

  seed = (the client's shuffle seed for this round, round): a function of
  (config seed, round, client) only, so a resumed round is identical.
  """
  out = []
  for c in picked:
    x, y = data.client_arrays(data.client_ids[c])
    out.append(collections.OrderedDict(
        x=x, y=y, seed=np.array([sampling.shuffle_seed(
            seed, round_num, int(c)), round_num], np.int64)))
  return out


def _eval_shards(data: federated_data.FederatedData, num: int):
  return federated_data.eval_bounds(len(data.test_y), num)


def _weights_list(weights) -> list[np.ndarray]:
  """OrderedDict(trainable, non_trainable) -> arrays, trainable first."""
  return [np.asarray(v) for v in list(weights['trainable']) +
          list(weights['non_trainable'])]


class _LocalAlgorithm(algorithm_lib.Algorithm):
  """Base of FedGKT and FedAvg-BN: one local worker, every client sampled
  from the data set, K per round."""

  def __init__(self, settings, data: federated_data.FederatedData):
    self._settings = settings
    self._run = settings.run
    self.data = data
    self.sizes = [data.client_size(c) for c in data.client_ids]

  @property
  def num_clients(self) -> int:
    return len(self.data.client_ids)

  @property
  def sampled_per_round(self) -> int:
    return self._run.clients_per_round

  def execution(self, log_dir: str):
    return local_runtime.local_context(log_dir=log_dir)

  def _data_line(self) -> str:
    d = self.data
    return (f'data {d.name}: {len(d.client_ids)} clients, '
            f'{sum(self.sizes)} train / {len(d.test_y)} test examples')


class FedGkt(_LocalAlgorithm):
  """FedGKT rounds and evaluation (`gkt/process.py`)."""

  def __init__(self, settings, data: federated_data.FederatedData):
    super().__init__(settings, data)
    self.spec = gkt_process.GktSpec.create(
        settings.gkt, model_name=settings.model.name,
        epochs=settings.client.epochs, batch_size=settings.client.batch_size,
        input_shape=data.input_shape, num_classes=data.num_classes,
        num_clients=len(data.client_ids), seed=self._run.seed)
    self.report = gkt_process.model_report(self.spec)
    self.process = _build_gkt_process(self.spec)
    self.last_eval = {}

  @property
  def model_params(self) -> int:
    return self.report.whole_params

  @property
  def client_model_params(self) -> int:
    return self.report.edge_params

  def describe(self) -> str:
    r, g = self.report, self._settings.gkt
    model = self._settings.model.name
    return (
        f'{self._data_line()}\n'
        f'fedgkt: edge {g.edge_model} {r.edge_params:,} params, '
        f'{r.edge_train_flops / 1e6:.2f} MFLOPs/example to train | server '
        f'{model} body {r.server_params:,} params | whole '
        f'{model} (the FedAvg model) {r.whole_params:,} params, '
        f'{r.whole_train_flops / 1e6:.2f} MFLOPs/example: the edge has '
        f'{r.param_ratio:.1f}x fewer params, {r.flop_ratio:.1f}x fewer '
        f'FLOPs | features '
        f'{"float32" if g.bits == 32 else f"{g.bits}-bit {g.quantizer}"}')

  def initial_state(self):
    edge = self.process.initialize_client()
    k = self.data.num_classes
    return collections.OrderedDict(
        server=self.process.initialize_server(),
        clients=[gkt_process.initial_client_state(edge, n, k)
                 for n in self.sizes])

  def run_round(self, state, round_num: int,
                picked: np.ndarray) -> algorithm_lib.RoundResult:
    seed = self._run.seed
    data = _client_data(seed, self.data, round_num, picked)
    # In the order of the computation's input type (TFF matches by position).
    inputs = [collections.OrderedDict(
        key=np.int32(c), seed=d['seed'], x=d['x'], y=d['y'],
        state=state['clients'][c]) for c, d in zip(picked, data)]
    server, client_states, m = self.process.next(
        state['server'], np.array([seed, round_num], np.int64), inputs)
    clients = list(state['clients'])
    for c, s in zip(picked, client_states):
      clients[c] = s
    edge, srv, up = m['edge'], m['server'], m['bytes_up']
    epochs = self._settings.client.epochs
    row = {
        **_loss_accuracy(srv, 'train'),
        'bytes_down': int(m['bytes_down']),
        'bytes_up': int(up['total']),
        'client_flops': float(np.mean([
            self.report.client_round_flops(self.sizes[c], epochs)
            for c in picked])),
    }
    extra = {
        **_loss_accuracy(edge, 'edge_train'),
        'edge_train_kd': _ratio(edge['kd_sum'], edge['count']),
        'server_train_kd': _ratio(srv['kd_sum'], srv['count']),
        'bytes_up_features': int(up['features']),
        'bytes_up_logits': int(up['logits']),
        'bytes_up_labels': int(up['labels']),
        'samples_uploaded': int(sum(self.sizes[c] for c in picked)),
    }
    return algorithm_lib.RoundResult(
        collections.OrderedDict(server=server, clients=clients), row, extra)

  def eval_client_of_shard(self, shard: int, num_shards: int) -> int:
    """Training client whose edge model featurizes test shard `shard`."""
    return shard * len(self.data.client_ids) // num_shards

  def evaluate(self, state) -> tuple[dict, dict]:
    shards = _eval_shards(self.data, self._run.eval_clients)
    inputs = []
    for j, (a, b) in enumerate(shards):
      c = self.eval_client_of_shard(j, len(shards))
      inputs.append(collections.OrderedDict(
          key=np.int32(j),
          seed=np.array([self._run.seed, 1_000_000 + j], np.int64),
          x=self.data.test_x[a:b], y=self.data.test_y[a:b],
          weights=state['clients'][c]['weights']))
    m = self.process.evaluate(state['server']['weights'], inputs)
    self.last_eval = _loss_accuracy(m['edge'], 'edge_eval')
    return _loss_accuracy(m['server'], 'eval'), dict(self.last_eval)

  def final_weights(self, state) -> list[np.ndarray]:
    """The server model's weights (trainable, then non-trainable)."""
    return _weights_list(state['server']['weights'])

  def summary(self, rows: Sequence[dict],
              participations: np.ndarray) -> dict:
    del rows, participations
    r, g = self.report, self._settings.gkt
    extra = {
        'edge_model': g.edge_model,
        'edge_params': r.edge_params,
        'server_params': r.server_params,
        'whole_model_params': r.whole_params,
        'edge_train_flops_per_example': r.edge_train_flops,
        'whole_train_flops_per_example': r.whole_train_flops,
        'params_ratio_whole_vs_edge': r.param_ratio,
        'flops_ratio_whole_vs_edge': r.flop_ratio,
        'feature_bits': g.bits,
        'feature_quantizer': g.quantizer,
        'feature_bytes_per_sample': (
            4 * int(np.prod(self.spec.feature_shape)) if g.bits == 32
            else codec.FeatureCodec(
                self.spec.feature_shape, g.bits, g.quantizer
            ).encoded_bytes_per_sample()),
    }
    extra.update({f'final_{k}': v for k, v in self.last_eval.items()})
    return extra


class FedAvgBn(_LocalAlgorithm):
  """FedAvg-BN rounds and evaluation (`gkt/fedavg_bn.py`)."""

  def __init__(self, settings, data: federated_data.FederatedData):
    super().__init__(settings, data)
    self.task = task_lib.build_task(settings.model.name, data,
                                    seed=self._run.seed)
    self.process = fedavg_bn.build_fedavg_bn(
        settings.client,
        fedavg_registry.build_server_optimizer(settings.server),
        self.task, data.input_shape)

  @property
  def model_params(self) -> int:
    return self.task.num_params

  def describe(self) -> str:
    return (f'{self._data_line()}\n'
            f'fedavg_bn: model {self._settings.model.name} '
            f'{self.task.num_params:,} params, '
            f'{self.task.train_flops_per_example / 1e6:.2f} MFLOPs/example '
            'to train (batch-norm statistics averaged too)')

  def initial_state(self):
    return self.process.initialize()

  def run_round(self, state, round_num: int,
                picked: np.ndarray) -> algorithm_lib.RoundResult:
    state, m = self.process.next(
        state, _client_data(self._run.seed, self.data, round_num, picked))
    epochs = self._settings.client.epochs
    row = {
        **_loss_accuracy(m['train'], 'train'),
        'bytes_down': int(m['bytes_down']),
        'bytes_up': int(m['bytes_up']),
        'client_flops': float(np.mean([
            epochs * self.sizes[c] * self.task.train_flops_per_example
            for c in picked])),
    }
    return algorithm_lib.RoundResult(state, row, {})

  def evaluate(self, state) -> tuple[dict, dict]:
    inputs = [collections.OrderedDict(x=self.data.test_x[a:b],
                                      y=self.data.test_y[a:b])
              for a, b in _eval_shards(self.data, self._run.eval_clients)]
    m = self.process.evaluate(state['weights'], inputs)
    return _loss_accuracy(m, 'eval'), {}

  def final_weights(self, state) -> list[np.ndarray]:
    return _weights_list(state['weights'])

  def summary(self, rows: Sequence[dict],
              participations: np.ndarray) -> dict:
    del rows, participations
    return {'model_train_flops_per_example':
            self.task.train_flops_per_example}


def build_fedgkt(settings, data: federated_data.FederatedData) -> FedGkt:
  """The `algorithm=fedgkt` adapter of a run."""
  return FedGkt(settings, data)


def build_fedavg_bn(settings, data: federated_data.FederatedData
                    ) -> FedAvgBn:
  """The `algorithm=fedavg_bn` adapter of a run."""
  return FedAvgBn(settings, data)
