"""Per-step latency of trainer.tflite in the TF-free runtime (numpy only).

  .venv-device/bin/python -m mobile_export.device_bench MODEL_DIR STEPS \
      THREADS RUNTIME

Prints a JSON line: median / mean milliseconds of `train` on one full
batch of random inputs (after 3 warm-up steps).
"""

import json
import statistics
import sys
import time

import numpy as np

from mobile_export import device_client


def main(model_dir: str, steps: str, threads: str, runtime: str) -> None:
  device = device_client.DeviceTrainer(model_dir, runtime, int(threads))
  rng = np.random.default_rng(0)
  x = rng.random((device.batch_size,) + device.input_shape, np.float32)
  y = rng.integers(0, device.num_classes, device.batch_size).astype(np.int32)
  for _ in range(3):
    device.train(x, y)
  times = []
  for _ in range(int(steps)):
    t0 = time.perf_counter()
    device.train(x, y)
    times.append(time.perf_counter() - t0)
  print(json.dumps({'runtime': runtime, 'threads': int(threads),
                    'median_ms': 1000 * statistics.median(times),
                    'mean_ms': 1000 * statistics.mean(times)}))


if __name__ == '__main__':
  main(*sys.argv[1:])
