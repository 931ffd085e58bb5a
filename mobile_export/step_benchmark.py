"""Benchmark: one training step, TFLite trainer (TF-free) vs TensorFlow.

  ./bazelw run //mobile_export:step_benchmark -- --model_dir=runs/X/tflite

Same model, batch, weights and thread count (`--threads` for TensorFlow's
intra-op pool and for the TFLite interpreters). TensorFlow side, in this
process as `tf.function`s: (a) the usual Keras step (GradientTape + SGD apply), (b) the
trainer's own step (explicit builtin-op backward passes). TFLite side:
trainer.tflite's `train` signature in .venv-device (tflite-runtime and
ai-edge-litert, no TensorFlow), each in its own process. Rounds alternate
TF and TFLite so machine load hits both; medians of --steps steps.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time

from absl import app
from absl import flags

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

_MODEL_DIR = flags.DEFINE_string('model_dir', None, 'An export directory.')
_STEPS = flags.DEFINE_integer('steps', 20, 'Timed steps per measurement.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Alternating measurement rounds.')
_THREADS = flags.DEFINE_integer('threads', 2, 'Threads, TF and TFLite.')


def main(argv):
  del argv
  # Before TensorFlow's runtime starts: equal threads on both sides.
  tf.config.threading.set_intra_op_parallelism_threads(_THREADS.value)
  tf.config.threading.set_inter_op_parallelism_threads(_THREADS.value)
  # pylint: disable=g-import-not-at-top
  import numpy as np
  from mobile_export import layers
  from tff_compress.models import registry
  from tff_compress.program import run_dir as run_dir_lib
  # pylint: enable=g-import-not-at-top
  model_dir = run_dir_lib.resolve_user_path(_MODEL_DIR.value)
  with open(os.path.join(model_dir, 'manifest.json')) as f:
    manifest = json.load(f)
  batch, shape = manifest['batch_size'], tuple(manifest['input_shape'])
  model = registry.build_model(manifest['model'], shape,
                               manifest['num_classes'])
  lr, momentum = (manifest['optimizer']['learning_rate'],
                  manifest['optimizer']['momentum'])
  opt = tf.keras.optimizers.SGD(lr, momentum=momentum)
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  net = layers.network_from_keras(model)
  variables = model.trainable_variables

  @tf.function
  def keras_step(x, y):
    with tf.GradientTape() as tape:
      loss = loss_fn(y, model(x, training=True))
    opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  @tf.function
  def builtin_step(x, y):
    loss, grads = net.loss_and_grads(x, y, [v.read_value() for v in variables])
    for v, g in zip(variables, grads):
      v.assign_sub(lr * g)
    return loss

  rng = np.random.default_rng(0)
  x = tf.constant(rng.random((batch,) + shape, np.float32))
  y = tf.constant(rng.integers(0, manifest['num_classes'], batch), tf.int32)

  def time_tf(step):
    for _ in range(3):
      step(x, y)
    times = []
    for _ in range(_STEPS.value):
      t0 = time.perf_counter()
      step(x, y).numpy()
      times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)

  workspace = os.environ.get('BUILD_WORKSPACE_DIRECTORY') or os.path.dirname(
      os.path.dirname(os.path.realpath(__file__)))
  device_python = os.path.join(workspace, '.venv-device', 'bin', 'python3')

  def time_tflite(runtime):
    out = subprocess.run(
        [device_python, '-m', 'mobile_export.device_bench', model_dir,
         str(_STEPS.value), str(_THREADS.value), runtime],
        env={'PYTHONPATH': workspace, 'PYTHONNOUSERSITE': '1'},
        capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])['median_ms']

  results = {k: [] for k in ('tf_keras', 'tf_builtin', 'tflite_runtime',
                             'ai_edge_litert')}
  for _ in range(_ROUNDS.value):
    results['tf_keras'].append(time_tf(keras_step))
    results['tflite_runtime'].append(time_tflite('tflite_runtime'))
    results['tf_builtin'].append(time_tf(builtin_step))
    results['ai_edge_litert'].append(time_tflite('ai_edge_litert'))
  medians = {k: statistics.median(v) for k, v in results.items()}
  print(f'{manifest["model"]}, batch {batch}, TFLite threads '
        f'{_THREADS.value}, median ms per step over {_ROUNDS.value} rounds '
        f'of {_STEPS.value} steps:')
  for k, v in medians.items():
    print(f'  {k:16s} {v:8.1f} ms   (rounds: '
          f'{", ".join(f"{t:.1f}" for t in results[k])})')
  for k in ('tflite_runtime', 'ai_edge_litert'):
    print(f'  {k} / tf_keras = {medians[k] / medians["tf_keras"]:.2f}, '
          f'/ tf_builtin = {medians[k] / medians["tf_builtin"]:.2f}')


if __name__ == '__main__':
  flags.mark_flag_as_required('model_dir')
  app.run(main)
