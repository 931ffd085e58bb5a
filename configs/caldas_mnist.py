"""Default: FedAvg with the Caldas et al. 2018 CNN on the embedded MNIST digits.

4,000 real training digits split non-IID (Dirichlet alpha=0.5 over labels)
across 50 clients; 10 clients per round, 1 local epoch of SGD (lr 0.02),
batch 20. The server applies the averaged update with momentum 0.9 (FedAvgM,
Hsu et al. 2019): on this non-IID split plain FedAvg (lr 0.05) oscillated
between 0.82 and 0.92 eval accuracy over rounds 35-50, FedAvgM reached 0.935
and stayed there (docs/BENCHMARKS.md).
"""

from tff_compress import config_lib


def get_config():
  config = config_lib.default_config()
  config.name = 'caldas_mnist'
  config.rounds = 50
  config.clients_per_round = 10
  config.eval_every = 5
  config.model.name = 'caldas_cnn'
  config.client.learning_rate = 0.02
  config.client.epochs = 1
  config.client.batch_size = 20
  config.server.optimizer = 'sgd'
  config.server.learning_rate = 1.0
  config.server.momentum = 0.9
  return config
