"""Test helpers: run Python children and check processes are gone."""

from __future__ import annotations

import os
import subprocess
import sys
import time

WORKSPACE = os.path.abspath(
    os.path.join(os.path.dirname(__file__), '..', '..'))


def child_env() -> dict:
  env = dict(os.environ)
  env['PYTHONPATH'] = WORKSPACE + os.pathsep + env.get('PYTHONPATH', '')
  env['TF_CPP_MIN_LOG_LEVEL'] = '3'
  return env


def popen_python(code_or_args, **kwargs) -> subprocess.Popen:
  args = (['-c', code_or_args] if isinstance(code_or_args, str)
          else list(code_or_args))
  return subprocess.Popen(
      [sys.executable] + args, env=child_env(), cwd=WORKSPACE,
      stdin=subprocess.DEVNULL, **kwargs)


def is_alive(pid: int) -> bool:
  """True if `pid` exists and is not a zombie."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      state = f.read().rsplit(')', 1)[1].split()[0]
  except (FileNotFoundError, ProcessLookupError):
    return False
  return state not in ('Z', 'X')


def wait_dead(pid: int, timeout: float = 20.0) -> bool:
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if not is_alive(pid):
      return True
    time.sleep(0.1)
  return not is_alive(pid)


def worker_pids_of(parent_pid: int) -> list[int]:
  """Live `worker_binary` processes whose parent is `parent_pid`."""
  pids = []
  for name in os.listdir('/proc'):
    if not name.isdigit():
      continue
    try:
      with open(f'/proc/{name}/cmdline', 'rb') as f:
        cmd = f.read()
      with open(f'/proc/{name}/stat') as f:
        ppid = int(f.read().rsplit(')', 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
      continue
    if b'worker_binary' in cmd and ppid == parent_pid:
      pids.append(int(name))
  return pids
