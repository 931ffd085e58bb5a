"""Configuration: the sections, defaults, validation, settings and identity.

Each config section is declared once, in its own package, as a
`settings_lib.Section` dataclass (default, validation rule and doc of every
key together). This module assembles them:

* :func:`default_config` — every key with its default, so every config file
  in `configs/` starts from it and every key always exists with one type;
* :func:`validate` — each key's rule, then each section's cross-key checks;
  a problem raises :class:`ConfigError` with one line naming the key and the
  allowed values;
* :func:`settings` — the validated config as typed, frozen settings objects
  (:class:`Settings`), which is what library code receives;
* loading a config file, and the run's identity (hash, `config.json`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os

import ml_collections

from tff_compress import settings_lib
from tff_compress.data import settings as data_settings
from tff_compress.dropout import settings as dropout_settings
from tff_compress.encoders import settings as codec_settings
from tff_compress.faults import settings as fault_settings
from tff_compress.fedavg import settings as fedavg_settings
from tff_compress.gkt import settings as gkt_settings
from tff_compress.models import settings as model_settings
from tff_compress.privacy import settings as privacy_settings
from tff_compress.program import settings as program_settings
from tff_compress.runtime import settings as runtime_settings

ConfigError = settings_lib.ConfigError


@dataclasses.dataclass(frozen=True)
class Settings:
  """A validated config as one typed settings object per section."""

  run: program_settings.RunSettings
  data: data_settings.DataSettings
  model: model_settings.ModelSettings
  client: fedavg_settings.ClientSettings
  server: fedavg_settings.ServerSettings
  broadcast: codec_settings.BroadcastCodec
  uplink: codec_settings.UplinkCodec
  dropout: dropout_settings.DropoutSettings
  dp: privacy_settings.DpSettings
  secagg: privacy_settings.SecAggSettings
  faults: fault_settings.FaultSettings
  gkt: gkt_settings.GktSettings
  runtime: runtime_settings.RuntimeSettings


# `Settings` attribute -> its section class, in config (and check) order.
SECTIONS: dict[str, type[settings_lib.Section]] = {
    'run': program_settings.RunSettings,
    'data': data_settings.DataSettings,
    'model': model_settings.ModelSettings,
    'client': fedavg_settings.ClientSettings,
    'server': fedavg_settings.ServerSettings,
    'broadcast': codec_settings.BroadcastCodec,
    'uplink': codec_settings.UplinkCodec,
    'dropout': dropout_settings.DropoutSettings,
    'dp': privacy_settings.DpSettings,
    'secagg': privacy_settings.SecAggSettings,
    'faults': fault_settings.FaultSettings,
    'gkt': gkt_settings.GktSettings,
    'runtime': runtime_settings.RuntimeSettings,
}

# Sections saying where a run executes; not part of its identity.
EXECUTION_SECTIONS = (runtime_settings.RuntimeSettings.SECTION,)


def _node(config: ml_collections.ConfigDict, section: str):
  return config[section] if section else config


def default_config() -> ml_collections.ConfigDict:
  """All keys with their defaults (FedAvg on the embedded MNIST digits)."""
  c = ml_collections.ConfigDict()
  for cls in SECTIONS.values():
    if cls.SECTION:
      c[cls.SECTION] = ml_collections.ConfigDict()
    node = _node(c, cls.SECTION)
    for f in cls.keys():
      node[f.name] = f.default
  return c


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


def docs() -> dict[str, str]:
  """{'data.name': its one-line doc, ...} for every key."""
  out = {}
  for cls in SECTIONS.values():
    for f in cls.keys():
      key = f'{cls.SECTION}.{f.name}' if cls.SECTION else f.name
      out[key] = f.metadata['doc']
  return out


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks every key; raises ConfigError naming the first bad key."""
  known = set(flatten(default_config()))
  values = flatten(config)
  for key in values:
    if key not in known:
      raise ConfigError(
          f'unknown config key {key!r}; known keys: {", ".join(sorted(known))}')
  for key in sorted(known):
    if key not in values:
      raise ConfigError(f'config key {key!r} is missing')
  for cls in SECTIONS.values():
    for f in cls.keys():
      key = f'{cls.SECTION}.{f.name}' if cls.SECTION else f.name
      problem = f.metadata['rule'](values[key], config)
      if problem:
        raise settings_lib.problem(key, problem)
  for cls in SECTIONS.values():
    cls.check(config)
  return config


def settings(config: ml_collections.ConfigDict) -> Settings:
  """The typed settings of a validated config."""
  return Settings(**{name: cls.from_config(_node(config, cls.SECTION))
                     for name, cls in SECTIONS.items()})


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
