"""Inference latency of .tflite models in the TF-free runtime, interleaved.

  .venv-device/bin/python -m mobile_export.inference_bench \
      --runtime=tflite_runtime --threads=1 --rounds=7 --invokes=50 \
      a/inference.tflite b/inference.tflite ...

A phone classifies one example at a time, so each model runs at batch 1
(its first input resized to [1, ...]) on one fixed random example. Every
round times every model in turn, `--invokes` invocations each after 5
warm-up ones, so a change in machine load hits all models alike; a model's
figure is the median over rounds of its per-round median (milliseconds per
invocation, `Interpreter.invoke` only).

Prints one JSON line: {"runtime", "threads", "models": {path: {"median_ms",
"rounds_ms"}}}. Needs numpy and tflite-runtime or ai-edge-litert only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Optional, Sequence

import numpy as np

RUNTIMES = ('tflite_runtime', 'ai_edge_litert')


def _interpreter(path: str, runtime: str, threads: int):
  # pylint: disable=g-import-not-at-top  (only the runtime asked for)
  if runtime == 'tflite_runtime':
    from tflite_runtime import interpreter as lib
  else:
    from ai_edge_litert import interpreter as lib
  # pylint: enable=g-import-not-at-top
  interpreter = lib.Interpreter(model_path=path, num_threads=threads)
  detail = interpreter.get_input_details()[0]
  interpreter.resize_tensor_input(detail['index'],
                                  [1, *detail['shape_signature'][1:]])
  interpreter.allocate_tensors()
  detail = interpreter.get_input_details()[0]
  x = np.random.default_rng(0).random(detail['shape'], np.float32)
  interpreter.set_tensor(detail['index'], x.astype(detail['dtype']))
  return interpreter


def _median_ms(interpreter, invokes: int) -> float:
  for _ in range(5):
    interpreter.invoke()
  times = []
  for _ in range(invokes):
    t0 = time.perf_counter()
    interpreter.invoke()
    times.append(time.perf_counter() - t0)
  return 1000 * statistics.median(times)


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog='inference_bench', description=__doc__.split('\n')[0])
  parser.add_argument('models', nargs='+', help='.tflite files')
  parser.add_argument('--runtime', default='tflite_runtime',
                      choices=RUNTIMES)
  parser.add_argument('--threads', type=int, default=1)
  parser.add_argument('--rounds', type=int, default=7)
  parser.add_argument('--invokes', type=int, default=50)
  args = parser.parse_args(argv)
  if args.threads < 1 or args.rounds < 1 or args.invokes < 1:
    parser.error('--threads, --rounds and --invokes must be >= 1')
  try:
    interpreters = [_interpreter(p, args.runtime, args.threads)
                    for p in args.models]
  except (ValueError, RuntimeError, OSError) as e:
    print(f'inference_bench: error: {e}', file=sys.stderr)
    return 2
  rounds = {p: [] for p in args.models}
  for _ in range(args.rounds):
    for path, interpreter in zip(args.models, interpreters):
      rounds[path].append(_median_ms(interpreter, args.invokes))
  print(json.dumps({
      'runtime': args.runtime, 'threads': args.threads,
      'models': {p: {'median_ms': statistics.median(r), 'rounds_ms': r}
                 for p, r in rounds.items()}}))
  return 0


if __name__ == '__main__':
  sys.exit(main())
