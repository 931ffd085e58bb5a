"""Benchmark: where a training step spends its time, layer by layer.

  ./bazelw run //mobile_export:op_benchmark -- --model=caldas_cnn \\
      --rows=20 --threads=1

For every layer of the builtin trainer's network (`layers.py`; a Conv2D
fused with its max-pooling counts as one), the loss and the optimizer
update, this converts small TFLite models and times them:

* builtin forward: the layer's forward pass, returning what the backward
  pass keeps;
* builtin backward: the layer's backward pass from those tensors (no
  input gradient for the first weighted layer, as in the trainer);
* Flex forward and forward + backward: the ops the official recipe runs
  for the same layer (Keras' conv2d, bias_add, relu, max_pool, matmul, and
  TensorFlow's gradients of them: CONV_2D, TRANSPOSE_CONV, FlexConv2D-
  BackpropFilter, FlexReluGrad, FlexMaxPoolGrad, ...), SELECT_TF_OPS;
* loss: softmax cross-entropy and dL/dlogits, builtin vs TF's
  SparseSoftmaxCrossEntropyWithLogits (Flex);
* update: one SGD(M) step of every weight from resource variables, the
  trainer's (lr already in the gradient, `trainer.py`) vs the Keras
  optimizer's `apply_gradients` (the recipe's).

Weights and cached tensors are inputs of the small models: TFLite kernels
see non-constant weights either way, as in the trainer. Times: TensorFlow
(`tf.function`, builtin code), `tf.lite.Interpreter` of this TensorFlow
(builtin and Flex models), tflite-runtime and ai-edge-litert (.venv-device,
builtin models); the same thread count everywhere; per model the median
over --rounds rounds (models and runtimes alternating) of each round's
median of --reps invocations, ms of wall clock or (--clock=cpu) of the
process's CPU time.
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

_MODEL = flags.DEFINE_string('model', 'caldas_cnn', 'model.name.')
_ROWS = flags.DEFINE_integer('rows', 20, 'Rows per batch.')
_THREADS = flags.DEFINE_integer('threads', 1, 'Threads, TF and TFLite.')
_REPS = flags.DEFINE_integer('reps', 10, 'Timed invocations per round.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Alternating rounds.')
_LR = flags.DEFINE_float('learning_rate', 0.02, 'SGD step size.')
_MOMENTUM = flags.DEFINE_float('momentum', 0.0, 'SGD momentum.')
_CLOCK = flags.DEFINE_enum(
    'clock', 'wall', ['wall', 'cpu'],
    'wall: elapsed time; cpu: the process\'s CPU time, less sensitive to '
    'other processes on a loaded machine (sums all threads).')

# Times every .tflite file of a folder in one runtime: {name: [round
# medians]}. Runs in .venv-device (TF-free runtimes) or in this venv
# ('tensorflow': tf.lite.Interpreter with Flex).
_TIMER = r'''
import glob, json, os, statistics, sys, time
import numpy as np
folder, runtime, threads, reps, rounds, clock = sys.argv[1:7]
threads, reps, rounds = int(threads), int(reps), int(rounds)
now = time.perf_counter if clock == 'wall' else time.process_time
if runtime == 'tflite_runtime':
  from tflite_runtime.interpreter import Interpreter
elif runtime == 'ai_edge_litert':
  from ai_edge_litert.interpreter import Interpreter
else:
  import tensorflow as tf
  tf.config.threading.set_intra_op_parallelism_threads(threads)
  tf.config.threading.set_inter_op_parallelism_threads(threads)
  Interpreter = tf.lite.Interpreter
rng = np.random.default_rng(0)
models = {}
for path in sorted(glob.glob(os.path.join(folder, '*.tflite'))):
  name = os.path.basename(path)[:-len('.tflite')]
  if name.startswith('flex_') and runtime != 'tensorflow':
    continue
  it = Interpreter(model_path=path, num_threads=threads)
  if it.get_signature_list():  # the update: resource variables
    runner = it.get_signature_runner()
    details = runner.get_input_details()
  else:
    it.allocate_tensors()
    details = {d['index']: d for d in it.get_input_details()}
  args = {}
  for key, d in details.items():
    if d['dtype'] == np.int32:
      args[key] = rng.integers(0, 10, d['shape']).astype(np.int32)
    else:
      args[key] = (0.1 * rng.standard_normal(d['shape'])).astype(np.float32)
  if it.get_signature_list():
    call = lambda runner=runner, args=args: runner(**args)
  else:
    for index, value in args.items():
      it.set_tensor(index, value)
    call = it.invoke
  for _ in range(3):
    call()
  models[name] = call
out = {name: [] for name in models}
for _ in range(rounds):
  for name, call in models.items():
    times = []
    for _ in range(reps):
      t0 = now(); call()
      times.append(1000 * (now() - t0))
    out[name].append(statistics.median(times))
print(json.dumps(out))
'''


def _tf_forward(layer, x, w):
  """The ops Keras runs for `layer` (the Flex recipe's forward)."""
  # pylint: disable=g-import-not-at-top
  from mobile_export import layers as layers_lib
  # pylint: enable=g-import-not-at-top
  if isinstance(layer, layers_lib.Conv2D):
    y = tf.nn.conv2d(x, w[0], layer.strides, layer.padding.upper())
    if layer.use_bias:
      y = tf.nn.bias_add(y, w[1])
    if layer.relu:
      y = tf.nn.relu(y)
    if layer.scale != 1.0:
      y *= layer.scale
    if layer.pool:
      y = tf.nn.max_pool2d(y, layer.pool, layer.pool, 'VALID')
    return y
  if isinstance(layer, layers_lib.Dense):
    y = tf.matmul(x, w[0])
    if layer.use_bias:
      y = tf.nn.bias_add(y, w[1])
    return tf.nn.relu(y) if layer.relu else y
  if isinstance(layer, layers_lib.MaxPool):
    return tf.nn.max_pool2d(x, layer.pool, layer.pool, 'VALID')
  if isinstance(layer, layers_lib.Scale):
    return x * layer.scale
  return tf.reshape(x, [-1, x.shape[1] * x.shape[2] * x.shape[3]])


def _spec(t):
  return tf.TensorSpec(t.shape, t.dtype)


def _convert(fn, specs, flex: bool = False) -> bytes:
  module = tf.Module()
  module.fn = tf.function(fn, input_signature=specs)
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [module.fn.get_concrete_function()], module)
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  if flex:
    converter.target_spec.supported_ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
  return converter.convert()


def _convert_module(module, fn, specs, flex: bool) -> bytes:
  """A signature over resource variables (the optimizer update)."""
  with tempfile.TemporaryDirectory() as tmp:
    signature = tf.function(fn, input_signature=specs).get_concrete_function()
    tf.saved_model.save(module, tmp, signatures={'serving_default':
                                                 signature})
    converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if flex:
      converter.target_spec.supported_ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    converter.experimental_enable_resource_variables = True
    return converter.convert()


def _time_tf(fn, args, reps: int, clock: str) -> float:
  now = time.perf_counter if clock == 'wall' else time.process_time
  f = tf.function(fn)
  for _ in range(3):
    f(*args)
  times = []
  for _ in range(reps):
    t0 = now()
    tf.nest.map_structure(lambda t: t.numpy(), f(*args))
    times.append(1000 * (now() - t0))
  return statistics.median(times)


def _cases(model, rows: int, lr: float, momentum: float):
  """{key: (builtin fn or None, specs, tf args, flex)} of every timed model."""
  # pylint: disable=g-import-not-at-top
  from mobile_export import layers as layers_lib
  # pylint: enable=g-import-not-at-top
  net = layers_lib.network_from_keras(model)
  weights = [tf.constant(w) for w in model.get_weights()]
  x = tf.random.uniform((rows,) + net.input_shape)
  first = next(i for i, l in enumerate(net.layers) if l.num_weights)
  cases, order = {}, []
  for i, (layer, w) in enumerate(zip(net.layers, net.split(weights))):
    if i < first:  # nothing to train or differentiate yet
      x, _ = layer.forward(x, w)
      continue
    a, cache = layer.forward(x, w)
    kept = [t for t in tf.nest.flatten(cache) if isinstance(t, tf.Tensor)]
    need_dx = i > first

    def fwd(x_, *w_, layer=layer):
      out, c = layer.forward(x_, list(w_))
      return [out] + [t for t in tf.nest.flatten(c) if isinstance(t, tf.Tensor)]

    def bwd(dy, *args, layer=layer, cache=cache, nw=len(w), need_dx=need_dx):
      it = iter(args[nw:])
      c = tf.nest.map_structure(
          lambda t: next(it) if isinstance(t, tf.Tensor) else t, cache)
      dx, grads = layer.backward(dy, c, list(args[:nw]), need_dx=need_dx)
      return ([dx] if dx is not None else []) + grads

    def flex_fwd(x_, *w_, layer=layer):
      return _tf_forward(layer, x_, list(w_))

    def flex_fwd_bwd(x_, dy, *w_, layer=layer, need_dx=need_dx):
      with tf.GradientTape() as tape:
        tape.watch([x_] + list(w_))
        out = _tf_forward(layer, x_, list(w_))
      sources = list(w_) + ([x_] if need_dx else [])
      return tape.gradient(out, sources, output_gradients=dy)

    dy = tf.random.normal(a.shape) * 1e-3
    name = layer.name
    order.append(name)
    cases[f'{name}.fwd'] = (fwd, [_spec(x)] + [_spec(t) for t in w], [x] + w)
    cases[f'{name}.bwd'] = (bwd, [_spec(dy)] + [_spec(t) for t in w] +
                            [_spec(t) for t in kept], [dy] + w + kept)
    cases[f'flex_{name}.fwd'] = (flex_fwd, [_spec(x)] + [_spec(t) for t in w],
                                 None)
    cases[f'flex_{name}.fwd_bwd'] = (
        flex_fwd_bwd, [_spec(x), _spec(dy)] + [_spec(t) for t in w], None)
    x = a

  labels = tf.constant(
      tf.random.uniform([rows], 0, net.num_classes, tf.int32))
  logits_spec = tf.TensorSpec([rows, net.num_classes])

  def loss(z, y):
    logp = tf.nn.log_softmax(z)
    onehot = tf.one_hot(y, net.num_classes)
    count = tf.cast(tf.shape(y)[0], tf.float32)
    return (-tf.reduce_sum(onehot * logp) / count,
            (tf.exp(logp) - onehot) * (lr / count))

  def flex_loss(z, y):
    with tf.GradientTape() as tape:
      tape.watch(z)
      value = tf.reduce_mean(
          tf.nn.sparse_softmax_cross_entropy_with_logits(y, z))
    return value, tape.gradient(value, z)

  cases['loss.fwd_bwd'] = (loss, [logits_spec, tf.TensorSpec([rows],
                                                             tf.int32)],
                           [x, labels])
  cases['flex_loss.fwd_bwd'] = (flex_loss, cases['loss.fwd_bwd'][1], None)
  order.append('loss')
  return net, weights, order, cases


def _update_models(weights, lr: float, momentum: float) -> dict:
  """The trainer's SGD(M) update and the Keras optimizer's, as TFLite."""
  specs = [tf.TensorSpec(w.shape, tf.float32) for w in weights]
  builtin = tf.Module()
  builtin.w = [tf.Variable(w) for w in weights]
  builtin.a = [tf.Variable(w) for w in weights]
  builtin.on = tf.Variable(0.0)

  def builtin_update(*steps):  # steps = lr * g, as the trainer's
    values = [v.read_value() for v in builtin.w]
    if momentum:
      m = momentum * builtin.on
      for v, w, a, s in zip(builtin.w, values, builtin.a, steps):
        new_a = m * a + s
        a.assign(new_a)
        v.assign(w - new_a)
      builtin.on.assign(1.0)
    else:
      for v, w, s in zip(builtin.w, values, steps):
        v.assign(w - s)
    return {'done': tf.constant(0.0)}

  keras = tf.Module()
  keras.w = [tf.Variable(w) for w in weights]
  keras.opt = tf.keras.optimizers.SGD(lr, momentum=momentum)
  keras.opt.build(keras.w)

  def keras_update(*grads):
    keras.opt.apply_gradients(zip(grads, keras.w))
    return {'done': tf.constant(0.0)}

  return {'update.fwd_bwd': _convert_module(builtin, builtin_update, specs,
                                            flex=False),
          'flex_update.fwd_bwd': _convert_module(keras, keras_update, specs,
                                                 flex=True)}


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # the converter's INFO chatter
  tf.config.threading.set_intra_op_parallelism_threads(_THREADS.value)
  tf.config.threading.set_inter_op_parallelism_threads(_THREADS.value)
  # pylint: disable=g-import-not-at-top
  from tff_compress.models import registry
  # pylint: enable=g-import-not-at-top
  model = registry.build_model(_MODEL.value, (28, 28, 1), 10)
  _, weights, order, cases = _cases(model, _ROWS.value, _LR.value,
                                    _MOMENTUM.value)
  folder = tempfile.mkdtemp(prefix='op_benchmark_')
  for key, (fn, specs, _) in cases.items():
    with open(os.path.join(folder, key + '.tflite'), 'wb') as f:
      f.write(_convert(fn, specs, flex=key.startswith('flex_')))
  for key, blob in _update_models(weights, _LR.value,
                                  _MOMENTUM.value).items():
    with open(os.path.join(folder, key + '.tflite'), 'wb') as f:
      f.write(blob)
  order.append('update')

  tf_ms = {key: _time_tf(fn, args, _REPS.value, _CLOCK.value)
           for key, (fn, _, args) in cases.items() if args is not None}
  workspace = os.environ.get('BUILD_WORKSPACE_DIRECTORY') or os.path.dirname(
      os.path.dirname(os.path.realpath(__file__)))
  device_python = os.path.join(workspace, '.venv-device', 'bin', 'python3')
  runtimes = (('tensorflow', sys.executable), ('tflite_runtime',
                                                device_python),
              ('ai_edge_litert', device_python))
  rounds = {r: {} for r, _ in runtimes}
  # Runtimes alternate round by round: one round per process call.
  for _ in range(_ROUNDS.value):
    for runtime, python in runtimes:
      out = subprocess.run(
          [python, '-c', _TIMER, folder, runtime, str(_THREADS.value),
           str(_REPS.value), '1', _CLOCK.value],
          env={'PYTHONNOUSERSITE': '1', 'TF_CPP_MIN_LOG_LEVEL': '3',
               'PATH': os.environ.get('PATH', '')},
          capture_output=True, text=True, check=True)
      measured = json.loads(out.stdout.strip().splitlines()[-1])
      for key, values in measured.items():
        rounds[runtime].setdefault(key, []).extend(values)
  ms = {r: {k: statistics.median(v) for k, v in d.items()}
        for r, d in rounds.items()}

  print(f'{_MODEL.value}, {_ROWS.value} rows, {_THREADS.value} thread(s), '
        f'lr {_LR.value}, momentum {_MOMENTUM.value}; {_CLOCK.value} ms per '
        f'call, median of {_ROUNDS.value} rounds x {_REPS.value} calls')
  def value(times, name, part):
    """ms of one pass; a builtin layer's forward + backward is the sum."""
    if part == 'fwd_bwd' and f'{name}.bwd' in times:
      return times[f'{name}.fwd'] + times[f'{name}.bwd']
    return times.get(f'{name}.{part}')

  columns = (('TF (builtin code)', tf_ms, ''),
             ('tf.lite builtin', ms['tensorflow'], ''),
             ('tf.lite Flex recipe', ms['tensorflow'], 'flex_'),
             ('tflite-runtime', ms['tflite_runtime'], ''),
             ('ai-edge-litert', ms['ai_edge_litert'], ''))
  print('| layer | pass | ' + ' | '.join(c for c, _, _ in columns) +
        ' | builtin / Flex (tf.lite) |')
  print('|---|---|' + '---|' * (len(columns) + 1))
  totals = [0.0] * len(columns)
  labels = {'fwd': 'forward', 'bwd': 'backward',
            'fwd_bwd': 'forward + backward'}
  for name in order:
    parts = ('fwd_bwd',) if name in ('loss', 'update') else (
        'fwd', 'bwd', 'fwd_bwd')
    for part in parts:
      row = [value(times, prefix + name, part)
             for _, times, prefix in columns]
      ratio = (f'{row[1] / row[2]:.2f}x' if row[2] and part != 'bwd'
               else '–')
      print(f'| {name} | {labels[part]} | ' + ' | '.join(
          '–' if v is None else f'{v:.2f}' for v in row) + f' | {ratio} |')
      if part == 'fwd_bwd':
        totals = [t + (v or 0.0) for t, v in zip(totals, row)]
  print('| all | step (TF: without the update) | ' + ' | '.join(
      f'{t:.2f}' for t in totals) + f' | {totals[1] / totals[2]:.2f}x |')
  print(json.dumps({'tf': tf_ms, **ms}))


if __name__ == '__main__':
  app.run(main)
