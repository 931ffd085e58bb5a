"""Test helpers: the TF-free device venv and its subprocesses, and the
simulation's view of what a device trains on."""

from __future__ import annotations

import collections
import json
import os
import subprocess

import numpy as np
import tensorflow as tf

from mobile_export import device_client
from tff_compress.program import sampling

# The workspace, found from this file's real path (Bazel runs tests from a
# runfiles tree of symlinks into the workspace).
WORKSPACE = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.realpath(__file__))))


def device_python() -> str:
  """.venv-device's interpreter (./bazelw creates it before tests run)."""
  path = os.environ.get('DEVICE_PYTHON') or os.path.join(
      WORKSPACE, '.venv-device', 'bin', 'python3')
  if not os.access(path, os.X_OK):
    raise AssertionError(
        f'{path} is missing: run the tests through ./bazelw, which creates '
        'the TF-free .venv-device from requirements-device.lock')
  return path


def device_env() -> dict:
  env = {k: v for k, v in os.environ.items()
         if k not in ('PYTHONPATH', 'PYTHONHOME')}
  env['PYTHONPATH'] = WORKSPACE
  env['PYTHONNOUSERSITE'] = '1'
  return env


def run_device(args, **kwargs) -> subprocess.CompletedProcess:
  """Runs `.venv-device/bin/python3 ARGS` (blocking, output captured)."""
  return subprocess.run([device_python()] + list(args), env=device_env(),
                        cwd=WORKSPACE, capture_output=True, text=True,
                        stdin=subprocess.DEVNULL, check=False, **kwargs)


def popen_device(args) -> subprocess.Popen:
  return subprocess.Popen([device_python()] + list(args), env=device_env(),
                          cwd=WORKSPACE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True,
                          stdin=subprocess.DEVNULL)


def device_summaries(procs) -> list[dict]:
  """Waits for `device_client` processes; their JSON summaries, in order.

  Raises:
    AssertionError: a device exited non-zero (with its stderr's tail).
  """
  summaries = []
  for k, p in enumerate(procs):
    stdout, stderr = p.communicate(timeout=600)
    if p.returncode != 0:
      raise AssertionError(f'device {k} failed:\n{stderr[-3000:]}')
    summaries.append(json.loads(stdout.strip().splitlines()[-1]))
  return summaries


def device_ordered_datasets(data, picked, cfg, round_num: int = 1) -> list:
  """The picked clients' datasets, batches in the device client's order.

  A phone shuffles with its own RNG (`device_client.batch_order` from the
  client's shuffle seed of `round_num`), the simulation's loader may not:
  a simulated round that must equal a device round visits the examples in
  the device's order.
  """
  out = []
  batch = cfg.client.batch_size
  for index in picked:
    x, y = data.client_arrays(data.client_ids[index])
    order = np.concatenate(device_client.batch_order(
        len(y), batch, cfg.client.epochs,
        sampling.shuffle_seed(cfg.seed, round_num, int(index))))
    arrays = tf.data.Dataset.from_tensors((x, y)).repeat()
    batches = tf.data.Dataset.from_tensor_slices(order).batch(batch)
    out.append(tf.data.Dataset.zip((arrays, batches)).map(
        lambda xy, i: collections.OrderedDict(x=tf.gather(xy[0], i),
                                              y=tf.gather(xy[1], i))))
  return out
