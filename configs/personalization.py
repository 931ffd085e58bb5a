"""Personalization on a strongly non-IID split, with fine-tuning evaluation.

The default task (configs/caldas_mnist.py: Caldas CNN, 50 clients, 10 per
round, FedAvgM) on McMahan et al.'s pathological split: the digits sorted by
label and cut into 100 shards, 2 per client, so most clients hold 2 labels.
Every client holds out 25 % of its examples (stratified by label), which no
round trains on. After the last round each of the 50 clients scores the
global model on its held-out part, fine-tunes it for 2 epochs of SGD on its
own train part and scores it again (README "Personalization"; measured in
docs/BENCHMARKS.md). `--config.personalization.every=10` evaluates every 10
rounds too (~30 s each on 2 busy cores).

Variants:
  --config.algorithm=fedper                 the head stays on each client
  --config.client.work=fedprox --config.client.proximal_strength=0.1
  --config.data.partition=dirichlet --config.data.dirichlet_alpha=0.1
"""

from tff_compress import config_lib


def get_config():
  config = config_lib.default_config()
  config.name = 'personalization'
  config.rounds = 50
  config.clients_per_round = 10
  config.eval_every = 10
  config.model.name = 'caldas_cnn'
  config.data.num_clients = 50
  config.data.partition = 'shards'
  config.data.shards_per_client = 2
  config.client.learning_rate = 0.02
  config.client.epochs = 1
  config.client.batch_size = 20
  config.server.optimizer = 'sgd'
  config.server.learning_rate = 1.0
  config.server.momentum = 0.9
  config.personalization.evaluate = True
  config.personalization.every = 0
  config.personalization.eval_clients = 0
  config.personalization.test_fraction = 0.25
  config.personalization.epochs = 2
  config.personalization.batch_size = 20
  config.personalization.optimizer = 'sgd'
  config.personalization.learning_rate = 0.02
  return config
