"""Configuration: complete defaults, validation and the run-directory identity.

Every config file in `configs/` starts from :func:`default_config` and changes
what it needs, so every key always exists and has one type. :func:`validate`
checks values and raises :class:`ConfigError` with a one-line message that
names the key and the allowed values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
import os
from typing import Any, Callable, Optional, Sequence

import ml_collections


class ConfigError(ValueError):
  """A config value is missing, of the wrong type or out of range."""


# Values of `algorithm`; `simulate_lib.run` dispatches on them.
ALGORITHMS = ('fedavg', 'fedavg_bn', 'fedgkt')


def default_config() -> ml_collections.ConfigDict:
  """All keys with their defaults (FedAvg on the embedded MNIST digits)."""
  c = ml_collections.ConfigDict()
  c.name = 'default'
  c.seed = 0
  c.rounds = 20
  c.clients_per_round = 10
  # Federated evaluation on the test split every `eval_every` rounds (and
  # always after the last round), over `eval_clients` test clients.
  c.eval_every = 5
  c.eval_clients = 10
  # The federated algorithm: 'fedavg' (TFF learning process: FedAvg and
  # everything composed around it), 'fedgkt' (group knowledge transfer,
  # `gkt.*`; `model.name` is the large network the server trains) or
  # 'fedavg_bn' (FedAvg averaging every model variable, batch-norm
  # statistics included: the baseline for batch-norm models such as
  # FedGKT's ResNets). tff_compress/gkt/ implements the last two.
  c.algorithm = 'fedavg'

  c.data = ml_collections.ConfigDict()
  c.data.name = 'mnist_embedded'
  c.data.num_clients = 50
  c.data.partition = 'dirichlet'
  c.data.dirichlet_alpha = 0.5
  c.data.shards_per_client = 2
  c.data.test_fraction = 0.2
  c.data.cache_dir = ''
  c.data.only_digits = True

  c.model = ml_collections.ConfigDict()
  c.model.name = 'caldas_cnn'

  c.client = ml_collections.ConfigDict()
  c.client.work = 'sgd'
  c.client.learning_rate = 0.05
  c.client.momentum = 0.0
  c.client.epochs = 1
  c.client.batch_size = 20

  c.server = ml_collections.ConfigDict()
  c.server.optimizer = 'sgd'
  c.server.learning_rate = 1.0
  c.server.momentum = 0.0
  c.server.beta_1 = 0.9
  c.server.beta_2 = 0.99
  c.server.epsilon = 1e-3

  # Server->client (broadcast) and client->server (uplink) codecs (Caldas et
  # al. 2018): transform -> subsample -> stochastic quantization -> bitpack.
  # transform: none|hadamard|kashin; bits: 1..8, 16, or 32 (= float32, no
  # quantization); subsample: fraction of coordinates kept, (0, 1]; tensors
  # with fewer than min_size elements are sent as float32.
  for section in ('broadcast', 'uplink'):
    c[section] = ml_collections.ConfigDict()
    c[section].transform = 'none'
    c[section].bits = 32
    c[section].subsample = 1.0
    c[section].min_size = 1000

  # Federated Dropout (Caldas et al. 2018): each client trains a submodel
  # keeping a fraction `keep` of the units/filters of every hidden layer;
  # `per_layer` overrides it per layer ('conv1=0.75,dense1=0.5'). Masks are
  # drawn per client (`per_client`) or shared by all clients of a round
  # (`per_round`). keep=1 and no per_layer = plain FedAvg.
  c.dropout = ml_collections.ConfigDict()
  c.dropout.keep = 1.0
  c.dropout.per_layer = ''
  c.dropout.mask = 'per_client'
  # Multiply a dropped layer's activations by n/k while a client trains its
  # submodel (inverted dropout / HeteroFL's scaler); the full model is
  # evaluated unscaled.
  c.dropout.rescale = True

  # Differential privacy (tff_compress/privacy/). mode: none; user =
  # DP-FedAvg (clip each client's update to `clip`, Gaussian noise of std
  # noise_multiplier * clip on the sum, uniform client weights; `adaptive`
  # clipping tracks the `target_quantile` of update norms, starting at
  # `clip`); sample = local DP-SGD (per-microbatch clip `clip`, noise
  # noise_multiplier * clip; `microbatches` per batch, 0 = one per example).
  # epsilon is reported at `delta`. Updates with non-finite entries or L2
  # norm > zeroing_norm are zeroed before the DP aggregation.
  c.dp = ml_collections.ConfigDict()
  c.dp.mode = 'none'
  c.dp.noise_multiplier = 1.0
  c.dp.clip = 1.0
  c.dp.adaptive = False
  c.dp.target_quantile = 0.5
  c.dp.clip_learning_rate = 0.2
  c.dp.delta = 1e-5
  c.dp.microbatches = 0
  c.dp.zeroing_norm = 100.0

  # Secure aggregation of the uplink (tff.aggregators.SecureSumFactory):
  # coordinates clipped to [-range, range] and stochastically rounded to
  # `bits`-bit signed integers; the server only sees their sum.
  c.secagg = ml_collections.ConfigDict()
  c.secagg.enabled = False
  c.secagg.bits = 16
  c.secagg.range = 1.0

  # Client faults (tff_compress/faults/; README "Client faults"). Per round
  # and sampled client, seeded by (seed, round, client): it never reports
  # with probability drop_prob; a reporting client sends a NaN update with
  # probability nan_prob or one of L2 norm huge_norm with probability
  # huge_prob. The server samples ceil(K * (1 + over_select)) clients and
  # aggregates the first K reports by simulated latency (seconds, log-normal
  # latency_median * exp(latency_sigma * z) + seconds_per_example * local
  # examples) arriving within `deadline` (0 = none); a round with fewer than
  # min_reports reports is skipped (model unchanged). With any of these set,
  # updates that are non-finite or have L2 norm > dp.zeroing_norm are zeroed.
  c.faults = ml_collections.ConfigDict()
  c.faults.drop_prob = 0.0
  c.faults.nan_prob = 0.0
  c.faults.huge_prob = 0.0
  c.faults.huge_norm = 1e6
  c.faults.over_select = 0.0
  c.faults.deadline = 0.0
  c.faults.latency_median = 10.0
  c.faults.latency_sigma = 0.5
  c.faults.seconds_per_example = 0.0
  c.faults.min_reports = 1

  # FedGKT (He et al. 2020; algorithm='fedgkt'). Defaults are FedML's
  # released recipe. Clients train the edge model `edge_model` for
  # client.epochs epochs (batch client.batch_size) on CE + alpha * KD_T
  # against the server's logits; the server trains for `server_epochs`
  # (batch `server_batch_size`) on the uploaded feature maps with CE + beta *
  # KD_T against the clients' logits (beta = 0: FedML's script trains the
  # server on CE only). Optimizers: adam | sgdm (momentum 0.9) | sgd, with L2
  # `weight_decay`. Feature maps are sent as float32 (bits=32) or
  # stochastically quantized to `bits` bits (1..8, 16) per sample.
  c.gkt = ml_collections.ConfigDict()
  c.gkt.edge_model = 'resnet8'
  c.gkt.temperature = 3.0
  c.gkt.alpha = 1.0
  c.gkt.beta = 0.0
  c.gkt.client_optimizer = 'adam'
  c.gkt.client_learning_rate = 0.001
  c.gkt.server_optimizer = 'adam'
  c.gkt.server_learning_rate = 0.001
  c.gkt.server_epochs = 20
  c.gkt.server_batch_size = 256
  c.gkt.weight_decay = 1e-4
  c.gkt.bits = 32

  # Where the run executes, not what it computes: excluded from the run's
  # identity (`identity`), so a run may resume on other workers. `workers`:
  # 'host:port,...' of remote TFF workers (`tff_compress.worker`), '' = one
  # private local worker. `worker_data_dir`: where this driver writes the
  # client-data store the workers read ('' = ~/.cache/tff_compress/worker,
  # the workers' default --data_dir). Timeouts in seconds: reaching every
  # worker at start; each gRPC call (0 = no deadline).
  c.runtime = ml_collections.ConfigDict()
  c.runtime.workers = ''
  c.runtime.worker_data_dir = ''
  c.runtime.connect_timeout = 30.0
  c.runtime.rpc_timeout = 0.0
  return c


@dataclasses.dataclass(frozen=True)
class _Rule:
  check: Callable[[Any, Any], Optional[str]]  # (value, config) -> problem


def _choice(options: Sequence[str]) -> _Rule:
  def check(v, _):
    if v not in options:
      return f'is {v!r}; allowed: {", ".join(options)}'
    return None
  return _Rule(check)


def _int_range(lo: int, hi: Optional[int] = None) -> _Rule:
  def check(v, _):
    if isinstance(v, bool) or not isinstance(v, int):
      return f'must be an integer, got {v!r}'
    if v < lo or (hi is not None and v > hi):
      return f'is {v}; allowed: {lo}..{hi if hi is not None else "inf"}'
    return None
  return _Rule(check)


def _float_range(lo: float, hi: float = math.inf, lo_open: bool = False,
                 hi_open: bool = False) -> _Rule:
  def check(v, _):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
      return f'must be a number, got {v!r}'
    if (v < lo or (lo_open and v == lo) or v > hi or (hi_open and v == hi)):
      left = '(' if lo_open else '['
      right = ')' if hi_open else ']'
      return f'is {v}; allowed: {left}{lo}, {hi}{right}'
    return None
  return _Rule(check)


def _str_type(v, _):
  return None if isinstance(v, str) else f'must be a string, got {v!r}'


def _bool_type(v, _):
  return None if isinstance(v, bool) else f'must be true/false, got {v!r}'


def _clients_per_round(v, c):
  problem = _int_range(1).check(v, c)
  if problem:
    return problem
  if c.data.name != 'emnist' and v > c.data.num_clients:
    return f'is {v}; allowed: 1..data.num_clients ({c.data.num_clients})'
  return None


def _min_reports(v, c):
  problem = _int_range(1).check(v, c)
  if problem:
    return problem
  if v > c.clients_per_round:
    return f'is {v}; allowed: 1..clients_per_round ({c.clients_per_round})'
  return None


def _microbatches(v, c):
  problem = _int_range(0).check(v, c)
  if problem:
    return problem
  if c.dp.mode == 'sample' and v and c.client.batch_size % v:
    return (f'is {v}; client.batch_size ({c.client.batch_size}) must be '
            'divisible by it (0 = one example per microbatch)')
  return None


def _check_privacy(config) -> None:
  """Combinations of `dp.*` / `secagg.*` that no mechanism implements."""
  dp = config.dp
  if dp.mode == 'user' and dp.adaptive and dp.noise_multiplier > 0:
    # TFF spends part of the budget on the private quantile estimate, with
    # count noise 0.05 K; it needs noise_multiplier < 2 * 0.05 K.
    if dp.noise_multiplier >= 0.1 * config.clients_per_round:
      raise ConfigError(
          f"config key 'dp.noise_multiplier' is {dp.noise_multiplier}; with "
          'dp.adaptive=true it must be < 0.1 * clients_per_round '
          f'({0.1 * config.clients_per_round:g})')
  if config.secagg.enabled:
    uplink = config.uplink
    if (uplink.transform, uplink.bits, uplink.subsample) != ('none', 32, 1.0):
      raise ConfigError(
          "config key 'secagg.enabled' is true with a compressing uplink "
          'codec; the secure sum needs values that add up as integers, the '
          'codec decodes per client: set uplink.transform=none, '
          'uplink.bits=32, uplink.subsample=1.0 (secagg.bits sets the width)')


def _feature_bits(v, _):
  from tff_compress.encoders import factory  # pylint: disable=g-import-not-at-top
  if isinstance(v, bool) or v not in factory.BITS:
    return (f'is {v!r}; allowed: {", ".join(map(str, factory.BITS))} '
            '(32 = float32)')
  return None


def _workers(v, c):
  if not isinstance(v, str):
    return f'must be a string, got {v!r}'
  from tff_compress import runtime  # pylint: disable=g-import-not-at-top
  try:
    runtime.parse_workers(v)
  except runtime.WorkerAddressError as e:
    return f'is {v!r}: {e}; allowed: host:port,host:port'
  if v.strip() and c.algorithm == 'fedgkt':
    return 'applies to algorithm fedavg/fedavg_bn only; leave it empty'
  return None


def _registries() -> dict[str, Sequence[str]]:
  # Imported lazily: the registries import TensorFlow.
  # pylint: disable=g-import-not-at-top
  from tff_compress.data import registry as data_registry
  from tff_compress.data import partition
  from tff_compress.gkt import process as gkt_process
  from tff_compress.gkt import training as gkt_training
  from tff_compress.learning import registry as learning_registry
  from tff_compress.models import registry as model_registry
  # pylint: enable=g-import-not-at-top
  return {
      'gkt.edge_model': sorted(gkt_process.EDGE_MODELS),
      'gkt.client_optimizer': sorted(gkt_training.OPTIMIZERS),
      'gkt.server_optimizer': sorted(gkt_training.OPTIMIZERS),
      'data.name': sorted(data_registry.DATASETS),
      'data.partition': sorted(partition.PARTITIONERS),
      'model.name': sorted(model_registry.MODELS),
      'client.work': sorted(learning_registry.CLIENT_WORKS),
      'server.optimizer': sorted(learning_registry.SERVER_OPTIMIZERS),
  }


def _rules() -> dict[str, _Rule]:
  rules = {
      'name': _Rule(_str_type),
      'seed': _int_range(0, 2**31 - 1),
      'rounds': _int_range(1),
      'clients_per_round': _Rule(_clients_per_round),
      'eval_every': _int_range(1),
      'eval_clients': _int_range(1),
      'data.num_clients': _int_range(1),
      'data.dirichlet_alpha': _float_range(0.0, lo_open=True),
      'data.shards_per_client': _int_range(1),
      'data.test_fraction': _float_range(0.0, 1.0, lo_open=True,
                                         hi_open=True),
      'data.cache_dir': _Rule(_str_type),
      'data.only_digits': _Rule(_bool_type),
      'client.learning_rate': _float_range(0.0, lo_open=True),
      'client.momentum': _float_range(0.0, 1.0, hi_open=True),
      'client.epochs': _int_range(1),
      'client.batch_size': _int_range(1),
      'server.learning_rate': _float_range(0.0, lo_open=True),
      'server.momentum': _float_range(0.0, 1.0, hi_open=True),
      'server.beta_1': _float_range(0.0, 1.0, hi_open=True),
      'server.beta_2': _float_range(0.0, 1.0, hi_open=True),
      'server.epsilon': _float_range(0.0, lo_open=True),
  }
  for section in ('broadcast', 'uplink'):
    rules[f'{section}.min_size'] = _int_range(0)
  rules['dropout.keep'] = _float_range(0.0, 1.0, lo_open=True)
  rules['dropout.per_layer'] = _Rule(_str_type)
  rules['dropout.mask'] = _choice(('per_client', 'per_round'))
  rules['dropout.rescale'] = _Rule(_bool_type)
  rules.update({
      'runtime.workers': _Rule(_workers),
      'runtime.worker_data_dir': _Rule(_str_type),
      'runtime.connect_timeout': _float_range(0.0, lo_open=True),
      'runtime.rpc_timeout': _float_range(0.0),
  })
  rules.update({
      'dp.mode': _choice(('none', 'user', 'sample')),
      'dp.noise_multiplier': _float_range(0.0),
      'dp.clip': _float_range(0.0, lo_open=True),
      'dp.adaptive': _Rule(_bool_type),
      'dp.target_quantile': _float_range(0.0, 1.0, lo_open=True,
                                         hi_open=True),
      'dp.clip_learning_rate': _float_range(0.0),
      'dp.delta': _float_range(0.0, 1.0, lo_open=True, hi_open=True),
      'dp.microbatches': _Rule(_microbatches),
      'dp.zeroing_norm': _float_range(0.0, lo_open=True),
      'secagg.enabled': _Rule(_bool_type),
      'secagg.bits': _int_range(2, 24),
      'secagg.range': _float_range(0.0, lo_open=True),
  })
  rules.update({
      'faults.drop_prob': _float_range(0.0, 1.0),
      'faults.nan_prob': _float_range(0.0, 1.0),
      'faults.huge_prob': _float_range(0.0, 1.0),
      'faults.huge_norm': _float_range(0.0, lo_open=True),
      'faults.over_select': _float_range(0.0),
      'faults.deadline': _float_range(0.0),
      'faults.latency_median': _float_range(0.0, lo_open=True),
      'faults.latency_sigma': _float_range(0.0),
      'faults.seconds_per_example': _float_range(0.0),
      'faults.min_reports': _Rule(_min_reports),
  })
  rules.update({
      'algorithm': _choice(ALGORITHMS),
      'gkt.temperature': _float_range(0.0, lo_open=True),
      'gkt.alpha': _float_range(0.0),
      'gkt.beta': _float_range(0.0),
      'gkt.client_learning_rate': _float_range(0.0, lo_open=True),
      'gkt.server_learning_rate': _float_range(0.0, lo_open=True),
      'gkt.server_epochs': _int_range(1),
      'gkt.server_batch_size': _int_range(1),
      'gkt.weight_decay': _float_range(0.0),
      'gkt.bits': _Rule(_feature_bits),
  })
  for key, options in _registries().items():
    rules[key] = _choice(options)
  return rules


def _check_codecs(config) -> None:
  """The codec factory itself validates `broadcast.*` and `uplink.*`."""
  from tff_compress.encoders import factory  # pylint: disable=g-import-not-at-top
  for section in ('broadcast', 'uplink'):
    c = config[section]
    try:
      factory.build_chain(c.transform, c.subsample, c.bits,
                          config_prefix=section)
    except factory.CodecError as e:
      raise ConfigError(f'config key {e}') from e


def _check_algorithm(config) -> None:
  """Keys that only `algorithm=fedavg` implements; fedgkt's large model."""
  if config.algorithm == 'fedavg':
    return
  from tff_compress.gkt import process as gkt_process  # pylint: disable=g-import-not-at-top
  defaults = default_config()
  only_fedavg = ['client.work', 'dropout.keep', 'dropout.per_layer',
                 'dp.mode', 'secagg.enabled', 'faults.drop_prob',
                 'faults.nan_prob', 'faults.huge_prob', 'faults.over_select',
                 'faults.deadline', 'runtime.workers']
  for section in ('broadcast', 'uplink'):
    only_fedavg += [f'{section}.transform', f'{section}.bits',
                    f'{section}.subsample']
  values, default_values = flatten(config), flatten(defaults)
  for key in only_fedavg:
    if key in default_values and values[key] != default_values[key]:
      hint = ('; FedGKT compresses its uploads with gkt.bits'
              if key.startswith(('broadcast.', 'uplink.')) else '')
      raise ConfigError(
          f'config key {key!r} is {values[key]!r}; it applies to '
          f'algorithm=fedavg only (algorithm is {config.algorithm!r}: leave '
          f'it at {default_values[key]!r}{hint})')
  if config.algorithm == 'fedgkt':
    if config.model.name not in gkt_process.SERVER_DEPTHS:
      raise ConfigError(
          f"config key 'model.name' is {config.model.name!r}; "
          'algorithm=fedgkt splits one of: '
          f'{", ".join(sorted(gkt_process.SERVER_DEPTHS))}')


def _check_faults(config) -> None:
  """`faults.*` combinations: probabilities, pool size, DP, dropout."""
  f = config.faults
  if f.nan_prob + f.huge_prob > 1:
    raise ConfigError(
        f"config key 'faults.huge_prob' is {f.huge_prob}; faults.nan_prob + "
        f'faults.huge_prob must be <= 1 (nan_prob is {f.nan_prob})')
  from tff_compress.faults import schedule  # pylint: disable=g-import-not-at-top
  sampled = schedule.FaultSpec.from_config(f).num_sampled(
      config.clients_per_round)
  if config.data.name != 'emnist' and sampled > config.data.num_clients:
    raise ConfigError(
        f"config key 'faults.over_select' is {f.over_select}; it samples "
        f'ceil(clients_per_round * (1 + over_select)) = {sampled} clients, '
        f'allowed: at most data.num_clients ({config.data.num_clients})')
  if config.dp.mode == 'user' and f.over_select:
    raise ConfigError(
        f"config key 'faults.over_select' is {f.over_select}; allowed: 0 "
        "with dp.mode='user' (its epsilon assumes clients_per_round sampled "
        'clients per round)')
  poison = next((k for k in ('nan_prob', 'huge_prob') if f[k]), None)
  unsupported = {
      'Federated Dropout (dropout.keep < 1 or dropout.per_layer), whose '
      'scatter-average does not yet remove zeroed clients':
          config.dropout.keep != 1.0 or config.dropout.per_layer.strip(),
  }
  for what, applies in unsupported.items():
    if poison and applies:
      raise ConfigError(f"config key 'faults.{poison}' is {f[poison]}; "
                        f'allowed: 0 with {what}')


def _check_dropout(config) -> None:
  """`dropout.per_layer` must name droppable layers of `model.name`."""
  if config.dropout.keep == 1.0 and not config.dropout.per_layer.strip():
    return
  # pylint: disable=g-import-not-at-top
  from tff_compress.dropout import submodel
  from tff_compress.models import registry as model_registry
  # pylint: enable=g-import-not-at-top
  # Layer names do not depend on the input shape or the number of classes.
  model = model_registry.build_model(config.model.name, (28, 28, 1), 10)
  try:
    fractions = submodel.keep_fractions(
        model, config.dropout.keep,
        submodel.parse_per_layer(config.dropout.per_layer))
    submodel.build_plan(model, fractions)
  except submodel.SubmodelError as e:
    msg = str(e)
    if not msg.startswith('config key'):
      msg = f"config key 'dropout.keep' cannot apply: {msg}"
    raise ConfigError(msg) from e


def flatten(config: ml_collections.ConfigDict, prefix: str = '') -> dict:
  """{'data.name': ..., ...} for every leaf key."""
  out = {}
  for key, value in config.items():
    full = f'{prefix}{key}'
    if isinstance(value, ml_collections.ConfigDict):
      out.update(flatten(value, full + '.'))
    else:
      out[full] = value
  return out


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks every key; raises ConfigError naming the first bad key."""
  rules = _rules()
  known = set(flatten(default_config()))
  values = flatten(config)
  for key in values:
    if key not in known:
      raise ConfigError(
          f'unknown config key {key!r}; known keys: {", ".join(sorted(known))}')
  for key in sorted(known):
    if key not in values:
      raise ConfigError(f'config key {key!r} is missing')
  for key, rule in rules.items():
    problem = rule.check(values[key], config)
    if problem:
      raise ConfigError(f'config key {key!r} {problem}')
  _check_codecs(config)
  _check_algorithm(config)
  _check_dropout(config)
  _check_privacy(config)
  _check_faults(config)
  return config


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """`get_config()` of a config file, as `--config=path` loads it."""
  spec = importlib.util.spec_from_file_location('tff_compress_config', path)
  if spec is None or not os.path.isfile(path):
    raise ConfigError(f'config file not found: {path}')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not callable(getattr(module, 'get_config', None)):
    raise ConfigError(f'config file {path} defines no get_config()')
  return module.get_config()


# Sections saying where a run executes; not part of its identity.
EXECUTION_SECTIONS = ('runtime',)


def identity(config: ml_collections.ConfigDict) -> dict:
  """The config without :data:`EXECUTION_SECTIONS`: what the run computes."""
  return {k: v for k, v in config.to_dict().items()
          if k not in EXECUTION_SECTIONS}


def config_hash(config: ml_collections.ConfigDict) -> str:
  """Short stable hash of the resolved config's :func:`identity`."""
  blob = json.dumps(identity(config), sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:10]


def to_json(config: ml_collections.ConfigDict) -> str:
  """`config.json`: the resolved config's :func:`identity`."""
  return json.dumps(identity(config), sort_keys=True, indent=2, default=str)
