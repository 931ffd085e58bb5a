"""Runs in the TF-free .venv-device: exercises trainer.tflite for the tests.

  python device_probe.py MODEL_DIR IN.npz OUT.npz RUNTIME

IN.npz: batches_x [S, B, ...], batches_y [S, B] (label -1 = absent row),
infer_x [R, ...], optional broadcast (uint8 message). OUT.npz: losses,
logits, params_before/after/restored (a0..), the encode_update outputs and
the device's float update, and the DeviceError messages of bad calls.
"""

import importlib.util
import json
import sys

import numpy as np

from mobile_export import device_client


def main(model_dir, in_path, out_path, runtime):
  assert importlib.util.find_spec('tensorflow') is None, 'TensorFlow present'
  device = device_client.DeviceTrainer(model_dir, runtime)
  data = dict(np.load(in_path))
  out = {}
  before = device.parameters()
  if 'broadcast' in data:
    out['round'] = device.load_broadcast(data['broadcast'].tobytes())
    before = device.parameters()
  for i, w in enumerate(before):
    out[f'before_a{i}'] = w
  out['logits'] = device.infer(data['infer_x'])
  losses = []
  for x, y in zip(data['batches_x'], data['batches_y']):
    keep = y >= 0
    losses.append(device.train(x[keep], y[keep]))
  out['losses'] = np.array(losses, np.float64)
  after = device.parameters()
  for i, w in enumerate(after):
    out[f'after_a{i}'] = w
  update = device.update()
  raw = device._runners['encode_update'](  # pylint: disable=protected-access
      round=np.array(device.round, np.int64),
      **{f'u{i}': u for i, u in enumerate(update)})
  for key, value in raw.items():
    out[f'update_{key}'] = value
  blob, _ = device.encode_update(examples=7)
  out['update_message'] = np.frombuffer(blob, np.uint8)
  device.restore(before)
  for i, w in enumerate(device.parameters()):
    out[f'restored_a{i}'] = w
  errors = {}
  x0 = data['batches_x'][0]
  y0 = data['batches_y'][0]
  bad_calls = {
      'x_float64': lambda: device.train(x0.astype(np.float64), y0),
      'x_shape': lambda: device.train(x0[:, :-1], y0),
      'x_too_many_rows': lambda: device.train(
          np.concatenate([x0, x0]), np.concatenate([y0, y0])),
      'y_float': lambda: device.train(x0, y0.astype(np.float32)),
      'y_length': lambda: device.train(x0, y0[:-1]),
      'y_range': lambda: device.train(x0, np.full_like(y0, 99)),
      'infer_shape': lambda: device.infer(x0[..., None]),
      'restore_shape': lambda: device.restore([w[..., None] for w in before]),
      'broadcast_corrupt': lambda: device.load_broadcast(b'TFFB' + b'\0' * 40),
  }
  for name, call in bad_calls.items():
    try:
      call()
      errors[name] = None
    except device_client.DeviceError as e:
      errors[name] = str(e)
  out['errors'] = np.array(json.dumps(errors))
  np.savez(out_path, **out)


if __name__ == '__main__':
  main(*sys.argv[1:])
