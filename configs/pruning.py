"""Federated pruning: the Caldas CNN pruned to 50 % sparsity while it trains.

The task of configs/caldas_mnist.py (4,000 embedded digits, 50 Dirichlet
clients, 10 per round, FedAvgM) for 30 rounds. Every Conv2D/Dense kernel is
magnitude-pruned on the server along tfmot's cubic PolynomialDecay: mask
updates at rounds 1 (0 %), 6, 11 and 16 (50 %), then 14 rounds of training
under the final mask. Clients train under the mask and both directions send
only the kept weights. docs/BENCHMARKS.md ("Federated pruning") compares
pruning schedules at 50-90 % with the dense model and with one-shot pruning
at export, in 20 rounds (configs/tradeoff_pruning.py).
"""

import os

from tff_compress import config_lib


def get_config():
  config = config_lib.load_config_file(
      os.path.join(os.path.dirname(os.path.abspath(__file__)),
                   'caldas_mnist.py'))
  config.name = 'pruning'
  config.rounds = 30
  config.pruning.target = 0.5
  config.pruning.structure = 'unstructured'
  config.pruning.begin_round = 1
  config.pruning.end_round = 16
  config.pruning.frequency = 5
  return config
