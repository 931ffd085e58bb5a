"""User-level DP-FedAvg on the embedded digits with many small clients.

The task of configs/many_clients.py (N = 1,000 IID clients of 4 examples,
K = 100 per round, q = 0.1, dense model) with DP-FedAvg: fixed clip
C = 0.4, noise multiplier 1.0, δ = 1e-5 (< 1/N). docs/BENCHMARKS.md and
docs/results/tradeoff/ have the accuracy/ε trade-off.
"""

import os

from tff_compress import config_lib


def get_config():
  config = config_lib.load_config_file(
      os.path.join(os.path.dirname(os.path.abspath(__file__)),
                   'many_clients.py'))
  config.name = 'dp_fedavg'
  config.dp.mode = 'user'
  config.dp.noise_multiplier = 1.0
  return config
