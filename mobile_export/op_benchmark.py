"""Benchmark: where a TFLite training step spends its time, layer by layer.

  ./bazelw run //mobile_export:op_benchmark -- --model=caldas_cnn --threads=1

For every Conv2D/Dense layer of the model (at the exported trainer's batch
size) this times, in TensorFlow (a `tf.function`, `--threads` intra-op
threads) and in the TF-free TFLite runtimes (`.venv-device`, `--threads`
interpreter threads), the trainer's own builtin-op code for that layer:
the forward pass, and forward + backward (weight and input gradients,
`mobile_export/layers.py`). Weights are inputs of each small model, as in
the trainer, where they live in variables: TFLite kernels (and XNNPACK,
which only takes constant filters) see non-constant weights either way.
Median of `--reps` calls after warm-up, TF and TFLite alternating by layer.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time

from absl import app
from absl import flags

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

_MODEL = flags.DEFINE_string('model', 'caldas_cnn', 'model.name.')
_BATCH = flags.DEFINE_integer('batch', 20, 'Batch size (client.batch_size).')
_THREADS = flags.DEFINE_integer('threads', 1, 'Threads, TF and TFLite.')
_REPS = flags.DEFINE_integer('reps', 30, 'Timed calls per measurement.')

# Runs in .venv-device: times every .tflite file of a directory.
_DEVICE_SCRIPT = r'''
import glob, json, os, statistics, sys, time
import numpy as np
folder, threads, reps, runtime = sys.argv[1:5]
if runtime == 'tflite_runtime':
  from tflite_runtime.interpreter import Interpreter
else:
  from ai_edge_litert.interpreter import Interpreter
rng = np.random.default_rng(0)
out = {}
for path in sorted(glob.glob(os.path.join(folder, '*.tflite'))):
  it = Interpreter(path, num_threads=int(threads))
  it.allocate_tensors()
  for d in it.get_input_details():
    it.set_tensor(d['index'], rng.standard_normal(d['shape']).astype(np.float32))
  for _ in range(3):
    it.invoke()
  times = []
  for _ in range(int(reps)):
    t0 = time.perf_counter(); it.invoke(); times.append(time.perf_counter() - t0)
  out[os.path.basename(path)[:-len('.tflite')]] = 1000 * statistics.median(times)
print(json.dumps(out))
'''


def _convert(fn, specs) -> bytes:
  concrete = tf.function(fn, input_signature=specs).get_concrete_function()
  converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  return converter.convert()


def _time_tf(fn, args, reps: int) -> float:
  f = tf.function(fn)
  for _ in range(3):
    f(*args)
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    tf.nest.map_structure(lambda t: t.numpy(), f(*args))
    times.append(time.perf_counter() - t0)
  return 1000 * statistics.median(times)


def main(argv):
  del argv
  tf.config.threading.set_intra_op_parallelism_threads(_THREADS.value)
  tf.config.threading.set_inter_op_parallelism_threads(_THREADS.value)
  # pylint: disable=g-import-not-at-top
  from mobile_export import layers
  from tff_compress.models import registry
  # pylint: enable=g-import-not-at-top
  model = registry.build_model(_MODEL.value, (28, 28, 1), 10)
  net = layers.network_from_keras(model)
  weights = [tf.constant(w) for w in model.get_weights()]
  x = tf.random.normal((_BATCH.value, 28, 28, 1))
  rows, cases = [], {}
  for layer, w in zip(net.layers, net.split(weights)):
    y, _ = layer.forward(x, w)
    if w:  # a weighted layer: time it
      specs = [tf.TensorSpec(x.shape)] + [tf.TensorSpec(t.shape) for t in w]

      def fwd(x_, *w_, layer=layer):
        return layer.forward(x_, list(w_))[0]

      def fwd_bwd(x_, *w_, layer=layer, dy_shape=tuple(y.shape)):
        out, cache = layer.forward(x_, list(w_))
        dx, grads = layer.backward(tf.fill(dy_shape, 1e-3), cache, list(w_))
        return [dx] + grads
      name = layer.name
      cases[f'{name}.fwd'] = (fwd, specs, [x] + w)
      cases[f'{name}.fwd_bwd'] = (fwd_bwd, specs, [x] + w)
      rows.append(name)
    x = y
  folder = tempfile.mkdtemp(prefix='op_benchmark_')
  for key, (fn, specs, _) in cases.items():
    with open(os.path.join(folder, key + '.tflite'), 'wb') as f:
      f.write(_convert(fn, specs))
  tf_ms = {key: _time_tf(fn, args, _REPS.value)
           for key, (fn, _, args) in cases.items()}
  workspace = os.environ.get('BUILD_WORKSPACE_DIRECTORY') or os.path.dirname(
      os.path.dirname(os.path.realpath(__file__)))
  device_python = os.path.join(workspace, '.venv-device', 'bin', 'python3')
  lite_ms = {}
  for runtime in ('tflite_runtime', 'ai_edge_litert'):
    out = subprocess.run(
        [device_python, '-c', _DEVICE_SCRIPT, folder, str(_THREADS.value),
         str(_REPS.value), runtime],
        env={'PYTHONNOUSERSITE': '1'}, capture_output=True, text=True,
        check=True)
    lite_ms[runtime] = json.loads(out.stdout.strip().splitlines()[-1])
  print(f'{_MODEL.value}, batch {_BATCH.value}, {_THREADS.value} thread(s); '
        'median ms per call')
  print('| layer | pass | TF | tflite-runtime | ai-edge-litert | tflite-runtime / TF |')
  print('|---|---|---|---|---|---|')
  totals = {'tf': 0.0, 'tflite_runtime': 0.0, 'ai_edge_litert': 0.0}
  for name in rows:
    for part in ('fwd', 'fwd_bwd'):
      key = f'{name}.{part}'
      t, a, b = tf_ms[key], lite_ms['tflite_runtime'][key], lite_ms[
          'ai_edge_litert'][key]
      if part == 'fwd_bwd':
        totals['tf'] += t
        totals['tflite_runtime'] += a
        totals['ai_edge_litert'] += b
      label = 'forward' if part == 'fwd' else 'forward + backward'
      print(f'| {name} | {label} | {t:.2f} | {a:.2f} | {b:.2f} | '
            f'{a / t:.2f}x |')
  print(f'| all | forward + backward | {totals["tf"]:.2f} | '
        f'{totals["tflite_runtime"]:.2f} | {totals["ai_edge_litert"]:.2f} | '
        f'{totals["tflite_runtime"] / totals["tf"]:.2f}x |')


if __name__ == '__main__':
  app.run(main)
