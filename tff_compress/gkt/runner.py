"""The program loop of `algorithm=fedgkt` and `algorithm=fedavg_bn`.

`simulate_lib.run` dispatches here. The run directory has the same contract
as every other run (see `program/run_dir.py`): `config.json`, `metrics.csv`
with the standard columns, TensorBoard events, `summary.json`,
`curves.png`, `final_weights.npz` and `tff.program` checkpoints after every
round, so that re-running the same command resumes bit-identically.

FedGKT's program state is the server's state plus every client's state
(edge model, its optimizer state, the server logits it holds): a client keeps
its edge model between its rounds, so a checkpoint must keep it too.

`metrics.csv` columns for FedGKT: `train_loss`/`train_accuracy` are the
server model's (the large model being trained) over its epochs of the round;
`eval_*` is the deployed pipeline (a client's stem -> feature codec -> server
model) on the test split; `bytes_up` = features + logits + labels + client
keys, `bytes_down` = the server logits each client received;
`client_flops` = the edge model's training and feature extraction. The edge
models' own losses/accuracies go to TensorBoard and `summary.json`.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import os
import sys
import time
from typing import Callable, Optional, TextIO

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_compress import runtime
from tff_compress import simulate_lib
from tff_compress.data import federated_data
from tff_compress.data import registry as data_registry
from tff_compress.gkt import codec
from tff_compress.gkt import fedavg_bn
from tff_compress.gkt import process as gkt_process
from tff_compress.learning import task as task_lib
from tff_compress.program import run_dir as run_dir_lib

# pylint: disable=protected-access
# The loop plumbing (client sampling, shuffle seeds, signal deferral around
# the CSV row + checkpoint, torn-checkpoint recovery, progress lines) is
# simulate_lib's, shared so that every algorithm resumes the same way.
_signals_deferred = simulate_lib._signals_deferred
_load_latest_valid = simulate_lib._load_latest_valid
_CKPT_PREFIX = simulate_lib._CKPT_PREFIX
# pylint: enable=protected-access


def pack_state(state) -> collections.OrderedDict:
  """The leaves of `state` concatenated into one flat array per dtype.

  FedGKT's program state holds every client's edge model and optimizer
  state: thousands of small arrays. `tff.program.FileProgramStateManager`
  writes a SavedModel with one node per array, which took ~45 s for 1,400
  small arrays (and as long to load) against ~2 s for 70 arrays of the same
  total size, so checkpoints store a few large arrays instead.
  """
  groups = collections.OrderedDict()
  for leaf in tf.nest.flatten(state):
    a = np.asarray(leaf)
    groups.setdefault(a.dtype.name, []).append(a.reshape(-1))
  return collections.OrderedDict(
      (name, np.concatenate(parts)) for name, parts in groups.items())


def unpack_state(packed, template):
  """Inverse of `pack_state` given a structure with the same leaf shapes."""
  offsets = collections.defaultdict(int)
  leaves = []
  for leaf in tf.nest.flatten(template):
    a = np.asarray(leaf)
    start = offsets[a.dtype.name]
    offsets[a.dtype.name] = start + a.size
    leaves.append(np.asarray(packed[a.dtype.name][start:start + a.size],
                             a.dtype).reshape(a.shape))
  for name, used in offsets.items():
    if used != np.asarray(packed[name]).size:
      raise ValueError(f'checkpoint has {np.asarray(packed[name]).size} '
                       f'{name} values, the run needs {used}')
  return tf.nest.pack_sequence_as(template, leaves)


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


def _client_data(config, data: federated_data.FederatedData, round_num: int,
                 picked) -> list[collections.OrderedDict]:
  """OrderedDict(x, y, seed) of each picked client for this round.

  seed = (the client's shuffle seed for this round, round): a function of
  (config seed, round, client) only, so a resumed round is identical.
  """
  out = []
  for c in picked:
    x, y = data.client_arrays(data.client_ids[c])
    out.append(collections.OrderedDict(
        x=x, y=y, seed=np.array([simulate_lib.shuffle_seed(
            config.seed, round_num, int(c)), round_num], np.int64)))
  return out


def eval_shards(n: int, num: int) -> list[tuple[int, int]]:
  """[start, end) bounds cutting the test split into `num` shards."""
  num = max(1, min(num, n))
  bounds = np.linspace(0, n, num + 1).astype(int)
  return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


@dataclasses.dataclass
class _RoundResult:
  state: object
  row: dict            # metrics.csv values
  extra: dict          # TensorBoard-only scalars


class _FedGkt:
  """FedGKT rounds and evaluation for the program loop."""

  def __init__(self, config, data: federated_data.FederatedData):
    self.config = config
    self.data = data
    self.settings = gkt_process.GktSettings.from_config(
        config, data.input_shape, data.num_classes, len(data.client_ids))
    self.report = gkt_process.model_report(self.settings)
    self.process = _build_gkt_process(self.settings)
    self.sizes = [data.client_size(c) for c in data.client_ids]
    self.float_params = self.report.whole_params
    self.last_eval = {}

  def describe(self) -> str:
    r, c = self.report, self.config
    return (
        f'fedgkt: edge {c.gkt.edge_model} {r.edge_params:,} params, '
        f'{r.edge_train_flops / 1e6:.2f} MFLOPs/example to train | server '
        f'{c.model.name} body {r.server_params:,} params | whole '
        f'{c.model.name} (the FedAvg model) {r.whole_params:,} params, '
        f'{r.whole_train_flops / 1e6:.2f} MFLOPs/example: the edge has '
        f'{r.param_ratio:.1f}x fewer params, {r.flop_ratio:.1f}x fewer '
        f'FLOPs | features '
        f'{"float32" if c.gkt.bits == 32 else f"{c.gkt.bits}-bit"}')

  def initial_state(self):
    edge = self.process.initialize_client()
    k = self.data.num_classes
    return collections.OrderedDict(
        server=self.process.initialize_server(),
        clients=[gkt_process.initial_client_state(edge, n, k)
                 for n in self.sizes])

  def run_round(self, state, round_num: int,
                picked: np.ndarray) -> _RoundResult:
    cfg = self.config
    data = _client_data(cfg, self.data, round_num, picked)
    # In the order of the computation's input type (TFF matches by position).
    inputs = [collections.OrderedDict(
        key=np.int32(c), seed=d['seed'], x=d['x'], y=d['y'],
        state=state['clients'][c]) for c, d in zip(picked, data)]
    server, client_states, m = self.process.next(
        state['server'], np.array([cfg.seed, round_num], np.int64), inputs)
    clients = list(state['clients'])
    for c, s in zip(picked, client_states):
      clients[c] = s
    edge, srv, up = m['edge'], m['server'], m['bytes_up']
    row = {
        **_loss_accuracy(srv, 'train'),
        'bytes_down': int(m['bytes_down']),
        'bytes_up': int(up['total']),
        'client_flops': float(np.mean([
            self.report.client_round_flops(self.sizes[c], cfg.client.epochs)
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
    return _RoundResult(
        collections.OrderedDict(server=server, clients=clients), row, extra)

  def eval_client_of_shard(self, shard: int, num_shards: int) -> int:
    """Training client whose edge model featurizes test shard `shard`."""
    return shard * len(self.data.client_ids) // num_shards

  def evaluate(self, state) -> tuple[dict, dict]:
    shards = eval_shards(len(self.data.test_y), self.config.eval_clients)
    inputs = []
    for j, (a, b) in enumerate(shards):
      c = self.eval_client_of_shard(j, len(shards))
      inputs.append(collections.OrderedDict(
          key=np.int32(j),
          seed=np.array([self.config.seed, 1_000_000 + j], np.int64),
          x=self.data.test_x[a:b], y=self.data.test_y[a:b],
          weights=state['clients'][c]['weights']))
    m = self.process.evaluate(state['server']['weights'], inputs)
    self.last_eval = _loss_accuracy(m['edge'], 'edge_eval')
    return _loss_accuracy(m['server'], 'eval'), dict(self.last_eval)

  def final_weights(self, state) -> list[np.ndarray]:
    """The server model's weights (trainable, then non-trainable)."""
    w = state['server']['weights']
    return [np.asarray(v) for v in list(w['trainable']) +
            list(w['non_trainable'])]

  def summary(self, rows: list[dict]) -> dict:
    r, g = self.report, self.config.gkt
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
        'feature_bytes_per_sample': (
            4 * int(np.prod(self.settings.feature_shape)) if g.bits == 32
            else codec.FeatureCodec(
                self.settings.feature_shape, g.bits
            ).encoded_bytes_per_sample()),
    }
    extra.update({f'final_{k}': v for k, v in self.last_eval.items()})
    return extra


class _FedAvgBn:
  """FedAvg-BN rounds and evaluation for the program loop."""

  def __init__(self, config, data: federated_data.FederatedData):
    self.config = config
    self.data = data
    self.task = task_lib.build_task(config.model.name, data, seed=config.seed)
    self.process = fedavg_bn.build_fedavg_bn(config, self.task,
                                             data.input_shape)
    self.sizes = [data.client_size(c) for c in data.client_ids]
    self.float_params = self.task.num_params

  def describe(self) -> str:
    return (f'fedavg_bn: model {self.config.model.name} '
            f'{self.task.num_params:,} params, '
            f'{self.task.train_flops_per_example / 1e6:.2f} MFLOPs/example '
            'to train (batch-norm statistics averaged too)')

  def initial_state(self):
    return self.process.initialize()

  def run_round(self, state, round_num: int,
                picked: np.ndarray) -> _RoundResult:
    cfg = self.config
    state, m = self.process.next(
        state, _client_data(cfg, self.data, round_num, picked))
    row = {
        **_loss_accuracy(m['train'], 'train'),
        'bytes_down': int(m['bytes_down']),
        'bytes_up': int(m['bytes_up']),
        'client_flops': float(np.mean([
            cfg.client.epochs * self.sizes[c] *
            self.task.train_flops_per_example for c in picked])),
    }
    return _RoundResult(state, row, {})

  def evaluate(self, state) -> tuple[dict, dict]:
    shards = eval_shards(len(self.data.test_y), self.config.eval_clients)
    inputs = [collections.OrderedDict(x=self.data.test_x[a:b],
                                      y=self.data.test_y[a:b])
              for a, b in shards]
    m = self.process.evaluate(state['weights'], inputs)
    return _loss_accuracy(m, 'eval'), {}

  def final_weights(self, state) -> list[np.ndarray]:
    w = state['weights']
    return [np.asarray(v) for v in list(w['trainable']) +
            list(w['non_trainable'])]

  def summary(self, rows: list[dict]) -> dict:
    del rows
    return {'model_train_flops_per_example':
            self.task.train_flops_per_example}


# Config `algorithm` -> the program-loop adapter of tff_compress/gkt.
_ALGORITHMS: dict[str, Callable] = {
    'fedgkt': _FedGkt,
    'fedavg_bn': _FedAvgBn,
}


def run(
    config: ml_collections.ConfigDict,
    run_dir: str,
    out: TextIO = sys.stdout,
    after_round: Optional[Callable[[int], None]] = None,
) -> dict:
  """Trains `config` (algorithm fedgkt or fedavg_bn) into `run_dir`.

  Same contract as `simulate_lib.run`: creates or resumes `run_dir`, writes
  one metrics row and one checkpoint per round, and returns the summary
  also written to `summary.json`.
  """
  resuming = run_dir_lib.prepare(run_dir, config)
  data = data_registry.build_federated_data(config.data, seed=config.seed)
  client_ids = data.client_ids
  metrics_csv = run_dir_lib.MetricsCsv(os.path.join(run_dir, 'metrics.csv'))
  checkpoint_dir = os.path.join(run_dir, 'checkpoints')
  state_manager = tff.program.FileProgramStateManager(
      checkpoint_dir, prefix=_CKPT_PREFIX, keep_total=2)
  tb_writer = tf.summary.create_file_writer(os.path.join(run_dir, 'tb'))

  with runtime.local_context(log_dir=run_dir):
    algorithm = _ALGORITHMS[config.algorithm](config, data)
    print(
        f'run dir {run_dir}\n'
        f'data {data.name}: {len(client_ids)} clients, '
        f'{sum(algorithm.sizes)} train / {len(data.test_y)} test examples\n'
        f'{algorithm.describe()}', file=out, flush=True)
    state = algorithm.initial_state()
    start = 1
    if resuming:
      loaded, version = _load_latest_valid(
          state_manager, pack_state(state), checkpoint_dir, out)
      if loaded is not None:
        state, start = unpack_state(loaded, state), version + 1
        print(f'resuming after round {version}', file=out, flush=True)
      metrics_csv.truncate_after(version)
    progress = simulate_lib.Progress(config.rounds, out, start)

    for round_num in range(start, config.rounds + 1):
      t0 = time.monotonic()
      picked = simulate_lib.sample_clients(
          len(client_ids), config.clients_per_round, config.seed, round_num)
      result = algorithm.run_round(state, round_num, picked)
      state = result.state
      row = {'round': round_num, 'eval_loss': None, 'eval_accuracy': None,
             'epsilon': None, 'clients': len(picked), **result.row}
      extra = dict(result.extra)
      if round_num % config.eval_every == 0 or round_num == config.rounds:
        evaluated, eval_extra = algorithm.evaluate(state)
        row.update(evaluated)
        extra.update(eval_extra)
      row['round_seconds'] = time.monotonic() - t0

      # CSV first, then the checkpoint (see simulate_lib.run).
      with _signals_deferred():
        metrics_csv.append(row)
        with tb_writer.as_default(step=round_num):
          for key, value in {**row, **extra}.items():
            if key != 'round' and value is not None:
              tf.summary.scalar(key, value)
        tb_writer.flush()
        asyncio.run(state_manager.save(pack_state(state), round_num))
      progress.round(row)
      if after_round is not None:
        after_round(round_num)

  np.savez(os.path.join(run_dir, 'final_weights.npz'),
           *algorithm.final_weights(state))
  rows = metrics_csv.read()
  summary = _summarize(config, rows, algorithm.float_params)
  summary.update(algorithm.summary(rows))
  run_dir_lib.write_json(os.path.join(run_dir, 'summary.json'), summary)
  run_dir_lib.plot_curves(
      os.path.join(run_dir, 'metrics.csv'),
      os.path.join(run_dir, 'curves.png'),
      f'{config.name}: {config.algorithm} {config.model.name} on '
      f'{config.data.name}')
  acc = summary['final_eval_accuracy']
  print(
      f'done: {summary["rounds"]} rounds | final eval accuracy '
      f'{acc if acc is None else f"{acc:.4f}"} | '
      f'{summary["total_bytes_down"] / 1e6:.1f} MB down, '
      f'{summary["total_bytes_up"] / 1e6:.1f} MB up | '
      f'{summary["mean_client_flops"] / 1e9:.3f} GFLOPs per client per round'
      f' | {summary["total_round_seconds"]:.1f} s of rounds',
      file=out, flush=True)
  return summary


def _summarize(config, rows: list[dict], float_params: int) -> dict:
  """The summary keys every run has (see `simulate_lib`)."""
  evals = [r for r in rows if r['eval_accuracy']]
  down = sum(int(r['bytes_down']) for r in rows)
  up = sum(int(r['bytes_up']) for r in rows)
  client_rounds = max(1, sum(int(r['clients']) for r in rows))
  float_bytes = 4 * float_params
  seconds = [float(r['round_seconds']) for r in rows]
  return {
      'config_name': config.name,
      'algorithm': config.algorithm,
      'rounds': len(rows),
      'final_eval_accuracy': (float(evals[-1]['eval_accuracy'])
                              if evals else None),
      'final_eval_loss': float(evals[-1]['eval_loss']) if evals else None,
      'final_train_loss': float(rows[-1]['train_loss']) if rows else None,
      'total_bytes_down': down,
      'total_bytes_up': up,
      'mean_bytes_down_per_client': down / client_rounds,
      'mean_bytes_up_per_client': up / client_rounds,
      # One float32 copy of the (large) model, as FedAvg sends it.
      'compression_down_vs_float32': (float_bytes * client_rounds / down
                                      if down else None),
      'compression_up_vs_float32': (float_bytes * client_rounds / up
                                    if up else None),
      'mean_client_flops': (float(np.mean([float(r['client_flops'])
                                           for r in rows])) if rows else None),
      'model_params': float_params,
      'epsilon': None,
      'total_round_seconds': sum(seconds),
      'mean_round_seconds': float(np.mean(seconds)) if seconds else None,
  }
