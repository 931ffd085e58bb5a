"""Test helpers: the smoke config with overrides, and a run directory's files."""

from __future__ import annotations

import csv
import os

import numpy as np

from tests.tff_compress import process_utils
from tff_compress import config_lib

SMOKE = os.path.join(process_utils.WORKSPACE, 'configs', 'smoke.py')


def config_file(path: str, validate: bool = True, **overrides):
  """The config file at `path` with dotted-key overrides
  (`{'dropout.keep': 0.5}`), validated unless `validate` is False."""
  cfg = config_lib.load_config_file(path)
  for key, value in overrides.items():
    node = cfg
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config_lib.validate(cfg) if validate else cfg


def smoke_config(**overrides):
  """`configs/smoke.py` with overrides, validated."""
  return config_file(SMOKE, **overrides)


def metrics_rows(run_dir):
  """`metrics.csv` of a run directory as a list of dicts (strings)."""
  with open(os.path.join(run_dir, 'metrics.csv'), newline='') as f:
    return list(csv.DictReader(f))


def final_weights(run_dir):
  """The arrays of `final_weights.npz`, in saved order."""
  with np.load(os.path.join(run_dir, 'final_weights.npz')) as z:
    return [z[k] for k in sorted(z.files, key=lambda s: int(s.split('_')[1]))]
