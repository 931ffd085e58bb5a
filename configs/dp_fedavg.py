"""User-level DP-FedAvg on the embedded digits with many small clients.

ε depends on the client sampling rate q = K/N, so the 4,000 training digits
are cut IID into N = 1,000 clients of 4 examples and K = 100 are sampled per
round (q = 0.1). Fixed clip C = 0.4 (about the median update norm of one
local step at learning rate 0.1 on the dense model), noise multiplier 1.0,
δ = 1e-5 (< 1/N). docs/BENCHMARKS.md has the accuracy/ε trade-off.
"""

from tff_compress import config_lib


def get_config():
  config = config_lib.default_config()
  config.name = 'dp_fedavg'
  config.rounds = 30
  config.eval_every = 10
  config.data.num_clients = 1000
  config.data.partition = 'iid'
  config.clients_per_round = 100
  config.model.name = 'dense'
  config.client.learning_rate = 0.1
  config.server.momentum = 0.9
  config.dp.mode = 'user'
  config.dp.noise_multiplier = 1.0
  config.dp.clip = 0.4
  config.dp.delta = 1e-5
  return config
