"""Times and measures one .tflite trainer's `train` signature in one runtime.

Runs in whatever interpreter `step_benchmark` starts it with: .venv-device
for tflite-runtime and ai-edge-litert (numpy only, no TensorFlow), the
TensorFlow venv for `tf.lite.Interpreter` (`--runtime=tensorflow`, which
supplies the Flex delegate the official recipe needs). Two modes:

  python -m mobile_export.device_bench worker --model=M --runtime=R \\
      --threads=T --data=D.npz
    reads one JSON request per stdin line, {"rows": B, "steps": S}, and
    answers one JSON line per request: the S `train` call times on the
    first B rows of D.npz (x float32, y int32), wall clock and this
    process's CPU time (ms; CPU time is less sensitive to other processes
    on a loaded machine, and sums all threads), after `restore` of the
    weights the model had when loaded (so every request starts from the
    same weights) and one untimed warm-up call at that size.

  python -m mobile_export.device_bench memory --model=M --runtime=R \\
      --threads=T --data=D.npz --rows=B --steps=N
    prints {"peak_added_mb": ..., ...}: the process's peak resident memory
    (VmHWM) during N `train` calls minus its resident memory just before
    the first one, after the interpreter and inputs exist. The kernel's
    peak counter is reset first (/proc/self/clear_refs), so what the import
    or the model load touched does not count. Run it in a fresh process per
    model so models do not share a heap.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Optional, Sequence

import numpy as np

RUNTIMES = ('tflite_runtime', 'ai_edge_litert', 'tensorflow')


class BenchError(ValueError):
  """A bad argument or request."""


def _interpreter(path: str, runtime: str, threads: int):
  # pylint: disable=g-import-not-at-top  (one runtime per process)
  if runtime == 'tflite_runtime':
    from tflite_runtime.interpreter import Interpreter
  elif runtime == 'ai_edge_litert':
    from ai_edge_litert.interpreter import Interpreter
  elif runtime == 'tensorflow':
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    # The Flex delegate runs TF kernels on TF's own thread pools.
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    Interpreter = tf.lite.Interpreter  # pylint: disable=invalid-name
  else:
    raise BenchError(f'--runtime={runtime!r}; allowed: {", ".join(RUNTIMES)}')
  return Interpreter(model_path=path, num_threads=threads)


def _status_kb(field: str) -> int:
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith(field + ':'):
          return int(line.split()[1])
  except OSError as e:
    raise BenchError(f'peak memory needs Linux /proc ({e})') from e
  raise BenchError(f'/proc/self/status has no {field}')


class Bench:
  """One model's signatures in one runtime, with its initial weights."""

  def __init__(self, model: str, runtime: str, threads: int, data: str):
    self._interpreter = _interpreter(model, runtime, threads)
    self._train = self._interpreter.get_signature_runner('train')
    self._restore = self._interpreter.get_signature_runner('restore')
    self._initial = self._interpreter.get_signature_runner('parameters')()
    with np.load(data) as npz:
      self._x, self._y = npz['x'], npz['y']

  def _batch(self, rows: int):
    if not 1 <= rows <= len(self._y):
      raise BenchError(f'rows={rows}; the data has 1..{len(self._y)}')
    return self._x[:rows], self._y[:rows]

  def time_steps(self, rows: int, steps: int) -> dict:
    """{'wall_ms', 'cpu_ms'} lists of `steps` train calls on `rows` rows."""
    x, y = self._batch(rows)
    self._restore(**self._initial)
    self._train(x=x, y=y)  # resizes and plans the arena for this size
    wall, cpu = [], []
    for _ in range(steps):
      t0, c0 = time.perf_counter(), time.process_time()
      self._train(x=x, y=y)
      wall.append(1000 * (time.perf_counter() - t0))
      cpu.append(1000 * (time.process_time() - c0))
    return {'wall_ms': wall, 'cpu_ms': cpu}

  def peak_added(self, rows: int, steps: int) -> dict:
    """Peak resident memory added by `steps` train calls (MB = 2^20 B)."""
    x, y = self._batch(rows)
    try:
      with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # resets VmHWM to the current resident size
    except OSError as e:
      raise BenchError(f'peak memory needs Linux /proc ({e})') from e
    before = _status_kb('VmRSS')
    for _ in range(steps):
      self._train(x=x, y=y)
    peak = _status_kb('VmHWM')
    return {'rows': rows, 'steps': steps, 'rss_before_mb': before / 1024,
            'peak_mb': peak / 1024, 'peak_added_mb': (peak - before) / 1024}


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog='device_bench')
  parser.add_argument('mode', choices=('worker', 'memory'))
  parser.add_argument('--model', required=True)
  parser.add_argument('--runtime', required=True, choices=RUNTIMES)
  parser.add_argument('--threads', type=int, default=1)
  parser.add_argument('--data', required=True)
  parser.add_argument('--rows', type=int, default=20)
  parser.add_argument('--steps', type=int, default=5)
  args = parser.parse_args(argv)
  try:
    bench = Bench(args.model, args.runtime, args.threads, args.data)
    if args.mode == 'memory':
      print(json.dumps(bench.peak_added(args.rows, args.steps)), flush=True)
      return 0
  except (BenchError, OSError) as e:
    print(f'device_bench: error: {e}', file=sys.stderr, flush=True)
    return 2
  print(json.dumps({'ready': True}), flush=True)
  for line in sys.stdin:
    request = json.loads(line)
    times = bench.time_steps(int(request['rows']), int(request['steps']))
    print(json.dumps(times), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
