"""Test helpers: configs with overrides, their settings, a run's files.

Every test builds its configs here (one shared helper):

  run_utils.smoke_config(**{'dropout.keep': 0.5})       # configs/smoke.py
  run_utils.default_config(**{'model.name': 'dense'})   # all defaults
  run_utils.config_file(path, **overrides)               # any config file
  run_utils.settings(cfg) / run_utils.training(cfg)      # typed settings
"""

from __future__ import annotations

import csv
import os

import numpy as np

from tests.tff_compress import process_utils
from tff_compress import config_lib
from tff_compress.fedavg import settings as fedavg_settings

SMOKE = os.path.join(process_utils.WORKSPACE, 'configs', 'smoke.py')
CONFIGS = os.path.join(process_utils.WORKSPACE, 'configs')


def override(cfg, validate: bool = True, **overrides):
  """`cfg` with dotted-key overrides (`{'dropout.keep': 0.5}`), validated
  unless `validate` is False."""
  for key, value in overrides.items():
    node = cfg
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config_lib.validate(cfg) if validate else cfg


def config_file(path: str, validate: bool = True, **overrides):
  """The config file at `path` (or `configs/<path>`) with overrides."""
  if not os.path.isabs(path) and not os.path.exists(path):
    path = os.path.join(CONFIGS, path)
  return override(config_lib.load_config_file(path), validate, **overrides)


def smoke_config(validate: bool = True, **overrides):
  """`configs/smoke.py` with overrides, validated."""
  return config_file(SMOKE, validate, **overrides)


def default_config(validate: bool = True, **overrides):
  """`config_lib.default_config()` with overrides, validated."""
  return override(config_lib.default_config(), validate, **overrides)


def settings(cfg) -> config_lib.Settings:
  """The typed settings of a validated config."""
  return config_lib.settings(cfg)


def training(cfg) -> fedavg_settings.TrainingSettings:
  """The FedAvg-process settings of a validated config."""
  return fedavg_settings.TrainingSettings.of(config_lib.settings(cfg))


def metrics_rows(run_dir):
  """`metrics.csv` of a run directory as a list of dicts (strings)."""
  with open(os.path.join(run_dir, 'metrics.csv'), newline='') as f:
    return list(csv.DictReader(f))


def final_weights(run_dir):
  """The arrays of `final_weights.npz`, in saved order."""
  with np.load(os.path.join(run_dir, 'final_weights.npz')) as z:
    return [z[k] for k in sorted(z.files, key=lambda s: int(s.split('_')[1]))]
