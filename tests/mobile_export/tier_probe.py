"""Runs in the TF-free .venv-device: checks each tier folder of an export.

  python tier_probe.py IN.npz OUT.json TIER_DIR...

IN.npz: test_x, test_y (the test split), x, y (one training batch). Per
TIER_DIR, OUT.json gets: the int8 test accuracy of its inference.tflite
(tflite_runtime, batches of 100), the loss of one `train` call of its
trainer.tflite (`device_client.DeviceTrainer`) on the batch, and the
trainer's parameter count and how far the weights moved.
"""

import importlib.util
import json
import os
import sys

import numpy as np
from tflite_runtime import interpreter as tflite

from mobile_export import device_client


def int8_accuracy(path: str, x: np.ndarray, y: np.ndarray) -> float:
  infer = tflite.Interpreter(model_path=path).get_signature_runner()
  correct = 0
  for a in range(0, len(y), 100):
    logits = infer(x=x[a:a + 100])['logits']
    correct += int((np.argmax(logits, 1) == y[a:a + 100]).sum())
  return correct / len(y)


def main(in_path, out_path, *tier_dirs):
  assert importlib.util.find_spec('tensorflow') is None, 'TensorFlow present'
  data = dict(np.load(in_path))
  out = {}
  for tier_dir in tier_dirs:
    device = device_client.DeviceTrainer(tier_dir)
    before = device.parameters()
    loss = device.train(data['x'], data['y'])
    after = device.parameters()
    out[os.path.basename(tier_dir)] = {
        'int8_accuracy': int8_accuracy(
            os.path.join(tier_dir, 'inference.tflite'), data['test_x'],
            data['test_y']),
        'train_loss': float(loss),
        'params': int(sum(w.size for w in before)),
        'max_weight_change': float(max(np.max(np.abs(a - b))
                                       for a, b in zip(after, before))),
    }
  with open(out_path, 'w') as f:
    json.dump(out, f)


if __name__ == '__main__':
  main(*sys.argv[1:])
