"""int8 inference model of a units-pruned run's smaller model (measurement).

  PYTHONPATH=. .venv/bin/python docs/results/pruning/compact_units_int8.py \
      RUN_DIR OUT.tflite

`mobile_export export` converts the full-shape model (the pruned units are
zeros); this converts the model `pruning/compact.py` makes of the same final
weights, calibrated and tested like the export (256 calibration examples
from 20 training clients drawn from the config seed; the 1,000 test
examples), and prints one JSON line: widths, parameters, forward FLOPs per
example, float and int8 test accuracy, file bytes.
"""

import json
import sys

import numpy as np
import tensorflow as tf

from mobile_export import export_lib
from tff_compress.data import registry as data_registry
from tff_compress.models import flops
from tff_compress.pruning import compact


def _accuracy_int8(model: bytes, x, y) -> float:
  infer = tf.lite.Interpreter(model_content=model).get_signature_runner()
  hits = sum(int((np.argmax(infer(x=x[a:a + 100])['logits'], 1)
                  == y[a:a + 100]).sum()) for a in range(0, len(y), 100))
  return hits / len(y)


def main(run_dir: str, out_path: str) -> None:
  config, weights = export_lib.load_run(run_dir)
  data = data_registry.build_federated_data(config.data, seed=config.seed)
  full = export_lib.build_keras_model(config, data.input_shape,
                                      data.num_classes)
  full.set_weights(weights)
  widths, small_weights = compact.compact(full, weights)
  small = export_lib.build_keras_model(config, data.input_shape,
                                       data.num_classes, widths)
  small.set_weights(small_weights)
  rng = np.random.default_rng(config.seed)
  pool = np.concatenate([
      data.client_arrays(data.client_ids[c])[0]
      for c in rng.permutation(len(data.client_ids))[:20]])
  calibration = pool[rng.permutation(len(pool))[:256]]
  x, y = data.test_x, data.test_y
  model = export_lib.inference_model(small, calibration, int8=True)
  with open(out_path, 'wb') as f:
    f.write(model)
  print(json.dumps({
      'widths': widths,
      'params': flops.count_params(small),
      'forward_flops': flops.forward_flops_per_example(small),
      'full_forward_flops': flops.forward_flops_per_example(full),
      'float_accuracy_small': float((np.argmax(
          small.predict(x, batch_size=100, verbose=0), 1) == y).mean()),
      'float_accuracy_full': float((np.argmax(
          full.predict(x, batch_size=100, verbose=0), 1) == y).mean()),
      'int8_accuracy': _accuracy_int8(model, x, y),
      'int8_bytes': len(model)}))


if __name__ == '__main__':
  main(*sys.argv[1:])
