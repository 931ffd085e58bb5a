"""The embedded digits as many small clients: the task for DP trade-offs.

ε depends on the client sampling rate q = K/N, so the 4,000 training digits
are cut IID into N = 1,000 clients of 4 examples (the most the digits allow
at 4 examples each) and K = 100 are sampled per round (q = 0.1). Dense model
(50,890 parameters: DP noise grows with √d, and the Caldas CNN's 1.66 M
parameters drown the signal of 100 clients), one local step per client at
learning rate 0.1, FedAvgM. No DP here: `dp.clip = 0.4` (about the median
update norm of that step) and `dp.delta = 1e-5` (< 1/N) are what
`--config.dp.mode=user` and configs/dp_fedavg.py use.
"""

from tff_compress import config_lib


def get_config():
  config = config_lib.default_config()
  config.name = 'many_clients'
  config.rounds = 30
  config.eval_every = 10
  config.data.num_clients = 1000
  config.data.partition = 'iid'
  config.clients_per_round = 100
  config.model.name = 'dense'
  config.client.learning_rate = 0.1
  config.server.momentum = 0.9
  config.dp.clip = 0.4
  config.dp.delta = 1e-5
  return config
