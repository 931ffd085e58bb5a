"""What every benchmark binary does with its `--config`: paths relative to
the workspace (`bazel run` starts binaries in their runfiles), overrides."""

from __future__ import annotations

import os
from typing import Sequence

from tff_compress import config_lib


def path(p: str) -> str:
  """`p` relative to the directory `bazel run` was called from."""
  if os.path.isabs(p):
    return p
  return os.path.join(os.environ.get('BUILD_WORKSPACE_DIRECTORY', '.'), p)


def _value(text: str):
  for cast in (int, float):
    try:
      return cast(text)
    except ValueError:
      pass
  return text


def load_config(p: str, overrides: Sequence[str] = ()):
  """The config file `p` with ``key=value`` overrides (ints, floats or
  strings; dotted keys), not validated."""
  cfg = config_lib.load_config_file(path(p))
  for item in overrides:
    key, _, value = item.partition('=')
    section, _, leaf = key.rpartition('.')
    node = cfg
    for part in section.split('.') if section else ():
      node = node[part]
    node[leaf] = _value(value)
  return cfg
