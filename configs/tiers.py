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

from tff_compress import config_lib


def get_config():
  config = config_lib.default_config()
  config.name = 'tiers'
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
  config.tiers.mix = 'high:1:1.0, mid:1:0.5, low:1:0.25'
  config.tiers.slicing = 'nested'
  return config
