"""Test helpers: the TF-free device venv and its subprocesses."""

from __future__ import annotations

import os
import subprocess

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
