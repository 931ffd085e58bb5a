"""Seconds-long run for tests: a small dense model, 4 rounds, 4 clients each."""

from tff_compress import config_lib


def get_config():
  config = config_lib.default_config()
  config.name = 'smoke'
  config.rounds = 4
  config.clients_per_round = 4
  config.eval_every = 2
  config.eval_clients = 2
  config.data.num_clients = 20
  config.model.name = 'dense'
  config.client.learning_rate = 0.1
  config.client.batch_size = 32
  return config
