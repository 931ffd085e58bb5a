"""Non-zero int8 kernel weights and gzip size of .tflite models (TF-free).

  /work/main/.venv-device/bin/python docs/results/pruning/int8_weights.py \
      a/inference.tflite b/inference.tflite ...

Weights of full-integer models are symmetric per channel (zero point 0), so
a pruned weight is stored as the int8 value 0 and counting non-zeros counts
the kept weights (plus those quantization rounds to 0). Kernels are the
int8 tensors of rank >= 2 whose first dimension is not the batch (1).
Prints one JSON object: per file its kernel weights, non-zero ones, bytes
and bytes after gzip -9 (a compressed download).
"""

import gzip
import json
import sys

import numpy as np
from tflite_runtime.interpreter import Interpreter


def main(paths):
  out = {}
  for path in paths:
    interpreter = Interpreter(model_path=path,
                              experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    total = nonzero = 0
    for d in interpreter.get_tensor_details():
      shape = d['shape']
      if d['dtype'] != np.int8 or len(shape) < 2 or shape[0] == 1:
        continue
      if d['quantization_parameters']['zero_points'].any():
        continue
      t = interpreter.get_tensor(d['index'])
      total += t.size
      nonzero += int(np.count_nonzero(t))
    with open(path, 'rb') as f:
      raw = f.read()
    out[path] = {'kernel_weights': total, 'nonzero': nonzero,
                 'bytes': len(raw), 'gzip9_bytes': len(gzip.compress(raw, 9))}
  print(json.dumps(out, indent=1))


if __name__ == '__main__':
  main(sys.argv[1:])
