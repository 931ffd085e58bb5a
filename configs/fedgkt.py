"""FedGKT (He et al. 2020) on the embedded MNIST digits (draft)."""

from tff_compress import config_lib


def get_config():
  config = config_lib.default_config()
  config.name = 'fedgkt'
  config.algorithm = 'fedgkt'
  config.rounds = 20
  config.data.num_clients = 20
  config.clients_per_round = 5
  config.eval_every = 5
  config.model.name = 'resnet20'
  config.client.epochs = 1
  config.client.batch_size = 32
  config.gkt.server_epochs = 2
  config.gkt.server_batch_size = 64
  return config
