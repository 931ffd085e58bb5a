"""trainer.tflite (Caldas CNN, codecs in the graph) in the TF-free runtimes.

One builtin-only conversion; `device_probe.py` drives it in .venv-device
with tflite-runtime and with ai-edge-litert, and every figure is compared
with TensorFlow here: the 20-step loss trajectory (batches of 1 to 32
rows, unpadded) against a Keras GradientTape trainer with TFF's SGDM (1e-5
relative), `infer` against Keras, parameters/restore, the broadcast decode
and the uplink encode against the server's codec, and the errors of
malformed calls. Also: the Flex recipe baseline trains as TF does, and the
benchmark worker runs it.
"""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema_fb

from mobile_export import convert
from mobile_export import flex_recipe
from mobile_export import messages
from mobile_export import server as server_lib
from mobile_export import trainer as trainer_lib
from tests.mobile_export import device_testing
from tff_compress import config_lib
from tff_compress.data import registry as data_registry
from tff_compress.models import registry as model_registry

_BATCH, _MAX_BATCH, _LR, _MOMENTUM = 20, 32, 0.05, 0.9
# Rows per step: the run's batch, the maximum, a phone's short last batches.
_ROWS = (20, 32, 7, 20, 1, 20, 32, 20, 13, 20, 20, 32, 20, 7, 20, 20, 1, 32,
         20, 7)
_STEPS = len(_ROWS)


def _config():
  c = config_lib.default_config()
  c.model.name = 'caldas_cnn'
  c.client.batch_size = _BATCH
  c.client.learning_rate = _LR
  c.client.momentum = _MOMENTUM
  c.broadcast.transform, c.broadcast.bits = 'hadamard', 8
  c.uplink.transform, c.uplink.bits = 'hadamard', 4
  c.data.num_clients = 20
  return config_lib.validate(c)


def _keras_trajectory(weights, batches_x, batches_y, model_name='caldas_cnn'):
  """TF reference: Keras forward, GradientTape, TFF's SGDM update."""
  model = model_registry.build_model(model_name, (28, 28, 1), 10)
  model.set_weights(weights)
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  accum = [tf.zeros_like(v) for v in model.trainable_variables]
  losses = []
  for x, y in zip(batches_x, batches_y):
    keep = y >= 0
    with tf.GradientTape() as tape:
      loss = loss_fn(y[keep], model(x[keep], training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    accum = [_MOMENTUM * a + g for a, g in zip(accum, grads)]
    for v, a in zip(model.trainable_variables, accum):
      v.assign_sub(_LR * a)
    losses.append(float(loss))
  return np.array(losses), [v.numpy() for v in model.trainable_variables]


def _matmul_operand_ranks(model: bytes, signature: str
                          ) -> list[tuple[int, int]]:
  """(rank of input 0, rank of input 1) of every BATCH_MATMUL / FC."""
  m = schema_fb.Model.GetRootAsModel(model, 0)
  kinds = (schema_fb.BuiltinOperator.BATCH_MATMUL,
           schema_fb.BuiltinOperator.FULLY_CONNECTED)
  out = []
  for sig in (m.SignatureDefs(i) for i in range(m.SignatureDefsLength())):
    if sig.SignatureKey().decode() != signature:
      continue
    g = m.Subgraphs(sig.SubgraphIndex())
    for op in (g.Operators(i) for i in range(g.OperatorsLength())):
      code = m.OperatorCodes(op.OpcodeIndex())
      if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) in kinds:
        out.append(tuple(g.Tensors(op.Inputs(k)).ShapeLength()
                         for k in range(2)))
  return out


class TrainerTfliteTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.config = _config()
    data = data_registry.build_federated_data(cls.config.data, seed=0)
    model = model_registry.build_model('caldas_cnn', data.input_shape, 10)
    cls.initial = model.get_weights()
    settings = trainer_lib.TrainerSettings.of(config_lib.settings(cls.config))
    trainer = trainer_lib.build_trainer(model, cls.initial, settings)
    cls.tflite = convert.convert_trainer(trainer)
    cls.ops = convert.ops_used(cls.tflite)
    cls.tmp = tempfile.mkdtemp()
    cls.model_dir = os.path.join(cls.tmp, 'model')
    os.makedirs(cls.model_dir)
    with open(os.path.join(cls.model_dir, 'trainer.tflite'), 'wb') as f:
      f.write(cls.tflite)
    # A manifest with what the device client reads (export_lib writes the
    # full one; export_test checks it).
    shapes = [w.shape for w in cls.initial]
    names = [w.name for w in model.weights]
    from mobile_export import export_lib  # pylint: disable=g-import-not-at-top
    manifest = {
        'format': 2, 'input_shape': [28, 28, 1], 'num_classes': 10,
        'batch_size': _BATCH, 'max_batch_size': _MAX_BATCH,
        'epochs': 1, 'weights': [{'shape': list(s)} for s in shapes],
        'signatures': export_lib.signature_details(cls.tflite),
        'codecs': {'broadcast': {'identity': False}},
        'broadcast_tensors': export_lib.tensor_layout(
            trainer.broadcast_coder.specs(), shapes, names, 'input'),
        'update_tensors': export_lib.tensor_layout(
            trainer.uplink_coder.specs(), shapes, names, 'output'),
    }
    with open(os.path.join(cls.model_dir, 'manifest.json'), 'w') as f:
      json.dump(manifest, f)
    cls.server = server_lib.DeviceRoundServer(
        config_lib.settings(cls.config), model)
    cls.broadcast = cls.server.broadcast(cls.initial, round_index=3)

    x, y = data.client_arrays(data.client_ids[0])
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))
    while len(idx) < _STEPS * _MAX_BATCH:
      idx = np.concatenate([idx, rng.permutation(len(y))])
    bx = x[idx[:_STEPS * _MAX_BATCH]].reshape(
        [_STEPS, _MAX_BATCH, 28, 28, 1])
    by = y[idx[:_STEPS * _MAX_BATCH]].reshape([_STEPS, _MAX_BATCH]).copy()
    # The probe trains on the rows labelled >= 0 only: `train` gets
    # _ROWS[s] rows at step s, unpadded.
    for step, rows in enumerate(_ROWS):
      by[step, rows:] = -1
    cls.batches = (bx, by)
    cls.infer_x = data.test_x[:50]
    in_path = os.path.join(cls.tmp, 'in.npz')
    np.savez(in_path, batches_x=bx, batches_y=by, infer_x=cls.infer_x,
             broadcast=np.frombuffer(cls.broadcast, np.uint8))
    cls.results = {}
    for runtime in ('tflite_runtime', 'ai_edge_litert'):
      out_path = os.path.join(cls.tmp, f'{runtime}.npz')
      proc = device_testing.run_device(
          ['tests/mobile_export/device_probe.py', cls.model_dir, in_path,
           out_path, runtime], timeout=600)
      if proc.returncode != 0:
        raise AssertionError(f'{runtime} probe failed:\n{proc.stderr[-3000:]}')
      cls.results[runtime] = dict(np.load(out_path))

  def _params(self, out, prefix):
    return [out[f'{prefix}_a{i}'] for i in range(len(self.initial))]

  def test_builtin_ops_only(self):
    self.assertEmpty([o for o in self.ops if o.startswith('Flex')])
    self.assertEmpty([o for o in self.ops if o.islower()])  # custom ops
    for op in ('BATCH_MATMUL', 'CONCATENATION', 'SPACE_TO_DEPTH', 'SIGN',
               'ASSIGN_VARIABLE', 'BITWISE_XOR'):
      self.assertIn(op, self.ops)
    # The op forms layers.py avoids: TFLite's convolutions with variable
    # filters (and TRANSPOSE_CONV's static output shape), a broadcasting
    # SELECT_V2 for ReLU, ARG_MAX/ONE_HOT pooling gradients.
    for op in ('CONV_2D', 'TRANSPOSE_CONV', 'SELECT_V2', 'ARG_MAX'):
      self.assertNotIn(op, self.ops)

  def test_matrix_products_are_rank_2(self):
    # A rank-4 left operand (a reshape the converter folded in) runs one
    # small product per image row: 2-3x slower (layers.py).
    # (The codecs' batched Hadamard products are rank 3 by design.) train:
    # 4 forward products, then dW and dx of 4 layers but no dx of conv1.
    for signature, count in (('train', 11), ('infer', 4)):
      ranks = _matmul_operand_ranks(self.tflite, signature)
      self.assertLen(ranks, count, signature)
      self.assertEqual(set(ranks), {(2, 2)}, signature)

  def test_broadcast_decodes_like_the_server(self):
    msg = messages.unpack(messages.BROADCAST, self.broadcast,
                          self.server.broadcast_coder.specs(),
                          [w.size for w in self.initial])
    want = self.server.broadcast_coder.decode(
        [{k: tf.constant(v) for k, v in t.items()} for t in msg.tensors],
        tf.constant(msg.seed))
    for out in self.results.values():
      self.assertEqual(int(out['round']), 3)
      for got, w in zip(self._params(out, 'before'), tf.nest.flatten(want)):
        np.testing.assert_allclose(got, w.numpy().reshape(got.shape),
                                   rtol=1e-5, atol=1e-6)

  def test_loss_trajectory_equals_tensorflow(self):
    for runtime, out in self.results.items():
      losses, weights = _keras_trajectory(self._params(out, 'before'),
                                          *self.batches)
      self.assertLen(out['losses'], _STEPS)
      self.assertLess(losses[12:19].mean(), losses[:5].mean())  # it learns
      np.testing.assert_allclose(out['losses'], losses, rtol=1e-5,
                                 err_msg=runtime)
      for got, want in zip(self._params(out, 'after'), weights):
        np.testing.assert_allclose(got, want, rtol=1e-4,
                                   atol=1e-5 * np.abs(want).max())

  def test_infer_equals_keras(self):
    for out in self.results.values():
      model = model_registry.build_model('caldas_cnn', (28, 28, 1), 10)
      model.set_weights(self._params(out, 'before'))
      want = model(self.infer_x).numpy()
      np.testing.assert_allclose(out['logits'], want, rtol=1e-5,
                                 atol=1e-5 * np.abs(want).max())

  def test_parameters_restore_round_trip(self):
    for out in self.results.values():
      for before, restored in zip(self._params(out, 'before'),
                                  self._params(out, 'restored')):
        np.testing.assert_array_equal(before, restored)

  def test_uplink_payload_is_the_servers_encoding(self):
    for out in self.results.values():
      update = [b - a for b, a in zip(self._params(out, 'before'),
                                      self._params(out, 'after'))]
      seed = tf.constant(out['update_seed'])
      self.assertEqual(int(out['update_seed'][1]), 3)  # the round index
      want = self.server.uplink_coder.encode(
          [tf.constant(u) for u in update], seed)
      for i, entries in enumerate(want):
        for key, value in entries.items():
          got = out[f'update_{trainer_lib.entry_name(i, key)}']
          value = value.numpy().reshape(got.shape)
          if value.dtype == np.uint8:  # packed codes: rare rounding flips
            self.assertGreater(np.mean(got == value), 0.995)
          else:
            np.testing.assert_allclose(got, value, rtol=1e-5, atol=1e-7)
      # The server decodes the device's message to the update, up to the
      # 4-bit quantization noise (per-coordinate std <= step / 2).
      decoded, weight = self.server.decode_update(
          out['update_message'].tobytes())
      self.assertEqual(weight, 7.0)
      for i, (d, u) in enumerate(zip(decoded, update)):
        if u.size >= 1000:
          # Stochastic rounding to 15 levels: error std <= step / 2 per
          # rotated coordinate, and the rotation keeps the RMS (up to the
          # few % of padding).
          step = float(out[f'update_t{i}_quantize_max'][0] -
                       out[f'update_t{i}_quantize_min'][0]) / 15
          self.assertLess(np.sqrt(np.mean((d - u)**2)), 1.1 * step / 2)
          self.assertGreater(np.corrcoef(d.ravel(), u.ravel())[0, 1], 0.5)
        else:
          np.testing.assert_allclose(d, u, rtol=1e-5, atol=1e-7)

  def test_bad_calls_give_clear_errors(self):
    for out in self.results.values():
      errors = json.loads(str(out['errors']))
      expected = {
          'x_float64': 'x must be float32',
          'x_shape': 'x has shape',
          'x_too_many_rows': 'train takes 1..32',
          'y_float': 'y must be int32',
          'y_length': 'one label per row',
          'y_range': 'outside 0..9',
          'infer_shape': 'x has shape',
          'restore_shape': 'expected float32',
          'broadcast_corrupt': 'bad broadcast',
      }
      for name, text in expected.items():
        self.assertIsNotNone(errors[name], name)
        self.assertIn(text, errors[name])


class FlexRecipeTest(absltest.TestCase):
  """The benchmark baseline is TF's step, and the benchmark worker runs it."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    model = model_registry.build_model('dense', (28, 28, 1), 10)
    cls.weights = model.get_weights()
    cls.recipe = flex_recipe.FlexRecipe(
        model_registry.build_model('dense', (28, 28, 1), 10), cls.weights,
        _LR, _MOMENTUM)
    cls.tflite = flex_recipe.convert(cls.recipe)
    rng = np.random.default_rng(3)
    cls.x = rng.random((32, 28, 28, 1)).astype(np.float32)
    cls.y = rng.integers(0, 10, 32).astype(np.int32)

  def test_needs_flex(self):
    self.assertNotEmpty(convert.flex_ops(convert.ops_used(self.tflite)))

  def test_trains_as_tensorflow_at_any_batch_size(self):
    train = tf.lite.Interpreter(
        model_content=self.tflite).get_signature_runner('train')
    rows = (20, 7, 32, 1, 20)
    got = [float(train(x=self.x[:n], y=self.y[:n])['loss']) for n in rows]
    by = np.full([len(rows), 32], -1, np.int32)
    for step, n in enumerate(rows):
      by[step, :n] = self.y[:n]
    want, _ = _keras_trajectory(self.weights, np.stack([self.x] * len(rows)),
                                by, model_name='dense')
    np.testing.assert_allclose(got, want, rtol=1e-5)

  def test_benchmark_worker_times_and_measures_it(self):
    tmp = tempfile.mkdtemp()
    model, data = os.path.join(tmp, 'flex.tflite'), os.path.join(tmp, 'd.npz')
    with open(model, 'wb') as f:
      f.write(self.tflite)
    np.savez(data, x=self.x, y=self.y)
    env = dict(os.environ, PYTHONPATH=device_testing.WORKSPACE,
               TF_CPP_MIN_LOG_LEVEL='3')
    args = [sys.executable, '-m', 'mobile_export.device_bench', '--model',
            model, '--runtime=tensorflow', '--data', data]
    proc = subprocess.run(args[:3] + ['worker'] + args[3:], env=env,
                          input='{"rows": 7, "steps": 3}\n', text=True,
                          capture_output=True, timeout=300, check=True)
    reply = json.loads(proc.stdout.strip().splitlines()[-1])
    for clock in ('wall_ms', 'cpu_ms'):
      self.assertLen(reply[clock], 3)
      self.assertTrue(all(t > 0 for t in reply[clock]))
    proc = subprocess.run(args[:3] + ['memory', '--rows=32', '--steps=2'] +
                          args[3:], env=env, text=True, capture_output=True,
                          timeout=300, check=True)
    memory = json.loads(proc.stdout.strip().splitlines()[-1])
    self.assertEqual(memory['rows'], 32)
    self.assertGreater(memory['peak_added_mb'], 0.0)
    self.assertGreaterEqual(memory['peak_mb'], memory['rss_before_mb'])


if __name__ == '__main__':
  absltest.main()
