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

  # FedGKT (He et al. 2020; algorithm='fedgkt'). Defaults are FedML's
  # released recipe. Clients train the edge model `edge_model` for
  # client.epochs epochs (batch client.batch_size) on CE + alpha * KD_T
  # against the server's logits; the server trains for `server_epochs`
  # (batch `server_batch_size`) on the uploaded feature maps with CE + beta *
  # KD_T against the clients' logits. Optimizers: adam | sgdm (momentum 0.9)
  # | sgd, with L2 `weight_decay`. Feature maps are sent as float32 (bits=32)
  # or stochastically quantized to `bits` bits (1..8, 16) per sample.
  c.gkt = ml_collections.ConfigDict()
  c.gkt.edge_model = 'resnet8'
  c.gkt.temperature = 3.0
  c.gkt.alpha = 1.0
  c.gkt.beta = 1.0
  c.gkt.client_optimizer = 'adam'
  c.gkt.client_learning_rate = 0.001
  c.gkt.server_optimizer = 'adam'
  c.gkt.server_learning_rate = 0.001
  c.gkt.server_epochs = 20
  c.gkt.server_batch_size = 256
  c.gkt.weight_decay = 1e-4
  c.gkt.bits = 32
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


def _registries() -> dict[str, Sequence[str]]:
  # Imported lazily: the registries import TensorFlow.
  # pylint: disable=g-import-not-at-top
  from tff_compress.data import registry as data_registry
  from tff_compress.data import partition
  from tff_compress.learning import registry as learning_registry
  from tff_compress.models import registry as model_registry
  # pylint: enable=g-import-not-at-top
  return {
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
  _check_dropout(config)
  _check_privacy(config)
  return config


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """`get_config()` of a config file, as `--config=path` loads it."""
  spec = importlib.util.spec_from_file_location('tff_compress_config', path)
  if spec is None or not os.path.isfile(path):
    raise ConfigError(f'config file not found: {path}')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def config_hash(config: ml_collections.ConfigDict) -> str:
  """Short stable hash of the resolved config (the run's identity)."""
  blob = json.dumps(config.to_dict(), sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:10]


def to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config.to_dict(), sort_keys=True, indent=2, default=str)
