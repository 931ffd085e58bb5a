"""Device tiers: the Caldas CNN trained by a fleet of three phone classes.

configs/caldas_mnist.py (the Caldas et al. 2018 CNN on 50 non-IID clients of
the embedded MNIST digits, 10 per round, FedAvgM) with every client in one
of three tiers for the whole run, a third of the clients each: `high`
phones train the full network, `mid` phones the first half of every hidden
layer's units/filters, `low` phones the first quarter (HeteroFL's nested
slices, with its activation scaler). The server averages every coordinate
over the clients that trained it, and at each evaluation reports the
accuracy of each tier's deployed model (`tier_<name>_eval_accuracy` in
metrics.csv, `tier_accuracy` in summary.json). Measured in
docs/BENCHMARKS.md ("Device tiers").
"""

import os

from tff_compress import config_lib


def get_config():
  config = config_lib.load_config_file(
      os.path.join(os.path.dirname(os.path.abspath(__file__)),
                   'caldas_mnist.py'))
  config.name = 'tiers'
  config.tiers.mix = 'high:1:1.0, mid:1:0.5, low:1:0.25'
  config.tiers.slicing = 'nested'
  return config
