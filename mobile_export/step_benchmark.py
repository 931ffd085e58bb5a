"""Benchmark: one training step of trainer.tflite vs TF's official Flex recipe.

  ./bazelw run //mobile_export:step_benchmark -- \\
      --model_dir=runs/X/tflite --threads=1 --rows=1,7,20,32

Variants, same model, weights, inputs, optimizer and thread count:

* `tf_keras`: the Keras model's step in TensorFlow (`tf.function`,
  GradientTape + Keras SGD(M)), in this process;
* `flex_recipe`: TF's official on-device training recipe (`flex_recipe.py`:
  tf.Module, GradientTape `train` signature, SELECT_TF_OPS) in
  `tf.lite.Interpreter` of this TensorFlow, which supplies Flex;
* `builtin`: trainer.tflite (builtin ops only) in the same
  `tf.lite.Interpreter`;
* `builtin_tflite_runtime`, `builtin_ai_edge_litert`: trainer.tflite in the
  TF-free runtimes (.venv-device, numpy only).

Each TFLite variant runs in its own worker process (`device_bench.py`),
created once; the rounds alternate every variant and every batch size, so
machine load hits all of them alike; a round is `--steps` `train` calls
from the same starting weights after one warm-up call at that size.
Reported: the median over rounds of each round's median, ms per step, of
the wall clock and of the process's CPU time (less sensitive to other
processes on a loaded machine; with 2 threads it adds both threads' time).
`--memory_steps=N` also runs each TFLite variant in a fresh process and
reports the peak resident memory added by N steps at `--memory_rows`
(`device_bench.py memory`), and the file sizes.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

_MODEL_DIR = flags.DEFINE_string('model_dir', None, 'An export directory.')
_ROWS = flags.DEFINE_list(
    'rows', None, 'Batch sizes (rows per train call) to time; default: the '
    "run's batch size.")
_STEPS = flags.DEFINE_integer('steps', 20, 'Timed steps per round.')
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Alternating rounds.')
_THREADS = flags.DEFINE_integer('threads', 1, 'Threads, TF and TFLite.')
_MEMORY_STEPS = flags.DEFINE_integer(
    'memory_steps', 5, 'Steps of the peak-memory runs (0: skip them).')
_MEMORY_ROWS = flags.DEFINE_integer(
    'memory_rows', None, "Rows of the peak-memory runs (default: the run's "
    'batch size).')

_TFLITE_VARIANTS = (
    ('flex_recipe', 'flex', 'tensorflow'),
    ('builtin', 'builtin', 'tensorflow'),
    ('builtin_tflite_runtime', 'builtin', 'tflite_runtime'),
    ('builtin_ai_edge_litert', 'builtin', 'ai_edge_litert'),
)


class _Worker:
  """A `device_bench.py worker` process serving timing requests."""

  def __init__(self, python: str, env: dict, model: str, runtime: str,
               threads: int, data: str):
    self._proc = subprocess.Popen(
        [python, '-m', 'mobile_export.device_bench', 'worker',
         f'--model={model}', f'--runtime={runtime}', f'--threads={threads}',
         f'--data={data}'],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    self._read()  # {"ready": true} once the model is loaded

  def _read(self) -> dict:
    line = self._proc.stdout.readline()
    if not line:
      raise RuntimeError(f'benchmark worker exited ({self._proc.wait()})')
    return json.loads(line)

  def time_steps(self, rows: int, steps: int) -> dict:
    self._proc.stdin.write(json.dumps({'rows': rows, 'steps': steps}) + '\n')
    self._proc.stdin.flush()
    return self._read()

  def close(self) -> None:
    self._proc.stdin.close()
    self._proc.wait(timeout=60)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # the converter's INFO chatter
  # Before TensorFlow's runtime starts: equal threads on every side.
  tf.config.threading.set_intra_op_parallelism_threads(_THREADS.value)
  tf.config.threading.set_inter_op_parallelism_threads(_THREADS.value)
  # pylint: disable=g-import-not-at-top
  import numpy as np
  from mobile_export import flex_recipe
  from tff_compress.models import registry
  from tff_compress.program import run_dir as run_dir_lib
  # pylint: enable=g-import-not-at-top
  model_dir = run_dir_lib.resolve_user_path(_MODEL_DIR.value)
  with open(os.path.join(model_dir, 'manifest.json')) as f:
    manifest = json.load(f)
  trainer_path = os.path.join(model_dir, 'trainer.tflite')
  shape = tuple(manifest['input_shape'])
  classes = manifest['num_classes']
  rows = [int(r) for r in _ROWS.value or [manifest['batch_size']]]
  lr = manifest['optimizer']['learning_rate']
  momentum = manifest['optimizer']['momentum']
  submodel = manifest['submodel']
  kwargs = ({'widths': submodel['widths'], 'scales': submodel['scales']}
            if submodel['federated_dropout'] else {})

  # The exported weights, so every variant starts from the same point.
  params = tf.lite.Interpreter(model_path=trainer_path).get_signature_runner(
      'parameters')()
  weights = [params[f'a{i}'] for i in range(len(params))]
  tmp = tempfile.mkdtemp(prefix='step_benchmark_')
  flex_path = os.path.join(tmp, 'flex_recipe.tflite')
  recipe = flex_recipe.FlexRecipe(
      registry.build_model(manifest['model'], shape, classes, **kwargs),
      weights, lr, momentum)
  with open(flex_path, 'wb') as f:
    f.write(flex_recipe.convert(recipe))
  paths = {'flex': flex_path, 'builtin': trainer_path}

  rng = np.random.default_rng(0)
  most = max(rows + [_MEMORY_ROWS.value or manifest['batch_size']])
  x = rng.random((most,) + shape, np.float32)
  y = rng.integers(0, classes, most).astype(np.int32)
  data_path = os.path.join(tmp, 'data.npz')
  np.savez(data_path, x=x, y=y)

  workspace = os.environ.get('BUILD_WORKSPACE_DIRECTORY') or os.path.dirname(
      os.path.dirname(os.path.realpath(__file__)))
  pythons = {'tensorflow': sys.executable,
             'tflite_runtime': os.path.join(workspace, '.venv-device', 'bin',
                                            'python3')}
  pythons['ai_edge_litert'] = pythons['tflite_runtime']
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONHOME'}
  env.update(PYTHONPATH=workspace, PYTHONNOUSERSITE='1',
             TF_CPP_MIN_LOG_LEVEL='3')
  workers = {name: _Worker(pythons[runtime], env, paths[model], runtime,
                           _THREADS.value, data_path)
             for name, model, runtime in _TFLITE_VARIANTS}

  keras = registry.build_model(manifest['model'], shape, classes, **kwargs)
  keras.set_weights(weights)
  opt = tf.keras.optimizers.SGD(lr, momentum=momentum)
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  variables = keras.trainable_variables

  @tf.function
  def keras_step(xb, yb):
    with tf.GradientTape() as tape:
      loss = loss_fn(yb, keras(xb, training=True))
    opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  def time_keras(n):
    xb, yb = tf.constant(x[:n]), tf.constant(y[:n])
    keras.set_weights(weights)
    keras_step(xb, yb).numpy()
    wall, cpu = [], []
    for _ in range(_STEPS.value):
      t0, c0 = time.perf_counter(), time.process_time()
      keras_step(xb, yb).numpy()
      wall.append(1000 * (time.perf_counter() - t0))
      cpu.append(1000 * (time.process_time() - c0))
    return {'wall_ms': wall, 'cpu_ms': cpu}

  names = ['tf_keras'] + [name for name, _, _ in _TFLITE_VARIANTS]
  results = {(clock, name, n): [] for clock in ('wall_ms', 'cpu_ms')
             for name in names for n in rows}
  for _ in range(_ROUNDS.value):
    for n in rows:
      measured = {'tf_keras': time_keras(n)}
      for name, worker in workers.items():
        measured[name] = worker.time_steps(n, _STEPS.value)
      for name, times in measured.items():
        for clock, values in times.items():
          results[(clock, name, n)].append(statistics.median(values))
  for worker in workers.values():
    worker.close()

  median = {k: statistics.median(v) for k, v in results.items()}
  print(f'{manifest["model"]}, {_THREADS.value} thread(s), '
        f'{manifest["optimizer"]["name"]} (lr {lr}, momentum {momentum}); '
        f'ms per train step, median of {_ROUNDS.value} alternating rounds '
        f'of {_STEPS.value} steps')
  for clock, title in (('wall_ms', 'wall clock'),
                       ('cpu_ms', 'CPU time of the process (all threads)')):
    print(f'\n{title}:')
    print('| variant | ' + ' | '.join(f'{n} rows' for n in rows) + ' |')
    print('|---|' + '---|' * len(rows))
    for name in names:
      print(f'| {name} | ' + ' | '.join(f'{median[(clock, name, n)]:.2f}'
                                        for n in rows) + ' |')
    ratios = [median[(clock, 'builtin', n)] /
              median[(clock, 'flex_recipe', n)] for n in rows]
    print('| builtin / flex_recipe (same tf.lite.Interpreter) | ' +
          ' | '.join(f'{r:.2f}x' for r in ratios) + ' |')
  record = {'model': manifest['model'], 'threads': _THREADS.value,
            'steps': _STEPS.value, 'rounds': _ROUNDS.value,
            'median': {f'{clock}/{name}@{n}': v
                       for (clock, name, n), v in median.items()},
            'rounds': {f'{clock}/{name}@{n}': v
                       for (clock, name, n), v in results.items()}}

  if _MEMORY_STEPS.value:
    n = _MEMORY_ROWS.value or manifest['batch_size']
    memory = {}
    for name, model, runtime in _TFLITE_VARIANTS:
      out = subprocess.run(
          [pythons[runtime], '-m', 'mobile_export.device_bench', 'memory',
           f'--model={paths[model]}', f'--runtime={runtime}',
           f'--threads={_THREADS.value}', f'--data={data_path}',
           f'--rows={n}', f'--steps={_MEMORY_STEPS.value}'],
          env=env, capture_output=True, text=True, check=False)
      if out.returncode:
        raise RuntimeError(f'{name} memory run failed: {out.stderr[-2000:]}')
      memory[name] = json.loads(out.stdout.strip().splitlines()[-1])
    sizes = {model: os.path.getsize(path) for model, path in paths.items()}
    print(f'\nPeak resident memory added by {_MEMORY_STEPS.value} train '
          f'steps of {n} rows (fresh process each), and file size:')
    print('| variant | peak added (MB) | file (MB) |')
    print('|---|---|---|')
    for name, model, _ in _TFLITE_VARIANTS:
      print(f'| {name} | {memory[name]["peak_added_mb"]:.1f} | '
            f'{sizes[model] / 2**20:.2f} |')
    added = {k: v['peak_added_mb'] for k, v in memory.items()}
    print('| builtin / flex_recipe (same tf.lite.Interpreter) | '
          f'{added["builtin"] / added["flex_recipe"]:.2f}x | '
          f'{sizes["builtin"] / sizes["flex"]:.2f}x |')
    record['memory'] = memory
    record['file_bytes'] = sizes
  print('\n' + json.dumps(record))


if __name__ == '__main__':
  flags.mark_flag_as_required('model_dir')
  app.run(main)
