"""Default: FedAvg with the Caldas et al. 2018 CNN on the embedded MNIST digits.

4,000 real training digits split non-IID (Dirichlet alpha=0.5 over labels)
across 50 clients; 10 clients per round, 1 local epoch of SGD, batch 20.
"""

from tff_compress import config_lib


def get_config():
  config = config_lib.default_config()
  config.name = 'caldas_mnist'
  config.rounds = 50
  config.clients_per_round = 10
  config.eval_every = 5
  config.model.name = 'caldas_cnn'
  config.client.learning_rate = 0.05
  config.client.epochs = 1
  config.client.batch_size = 20
  return config
