"""FedGKT (He et al. 2020) on the embedded MNIST digits, sized for 2 cores.

4,000 training digits over 20 Dirichlet(0.5) clients, 5 per round, 20
rounds. Each client trains its own edge ResNet-8 (10,298 parameters) and
uploads its 28x28x16 float32 stem feature maps, logits and labels; the
server trains the rest of a bottleneck ResNet-20 on them and sends back its
logits. Everything else is FedML's released recipe (config_lib defaults):
Adam lr 1e-3 with weight decay 1e-4 on both sides, KD temperature 3,
alpha 1 on the clients, CE only on the server (beta 0), 1 client epoch.
Scaled down for the machine: ResNet-20 instead of 56/110
(`--config.model.name=resnet56`), 2 server epochs instead of 20, batch 32/64
instead of 256, 5 of 20 clients per round instead of all.

The FedAvg baseline on the same network (batch-norm statistics averaged):
  --config.algorithm=fedavg_bn     (client.* SGD, server.* as for FedAvg)
Compressed features: --config.gkt.bits=8 (or 4).
"""

from tff_compress import config_lib


def get_config():
  config = config_lib.default_config()
  config.name = 'fedgkt'
  config.algorithm = 'fedgkt'
  config.rounds = 20
  config.eval_every = 5
  config.data.num_clients = 20
  config.clients_per_round = 5
  config.model.name = 'resnet20'
  config.client.epochs = 1
  config.client.batch_size = 32
  config.gkt.server_epochs = 2
  config.gkt.server_batch_size = 64
  return config
