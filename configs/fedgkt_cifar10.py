"""FedGKT on CIFAR-10 as in He et al. 2020 (FedML's released recipe).

Needs the CIFAR-10 python batches in a local cache (`data.cache_dir`,
default ~/.keras/datasets/cifar-10-batches-py/); nothing is downloaded, a
missing cache is a one-line error naming the expected files.

16 clients, Dirichlet(0.5) label skew, all clients in every round; edge
ResNet-8 (stem + 2 bottleneck blocks), server completing ResNet-56; FedML's
recipe: 1 client epoch, 20 server epochs, Adam lr 1e-3 (weight decay 1e-4)
on both sides, batch 256, KD temperature 3, alpha 1. FedML trains 200
rounds; on CPU one round of 50,000 feature maps through ResNet-56 takes
hours, so plan for a GPU machine or lower `gkt.server_epochs`. The uploaded
float32 features are 64 KB per image (3.3 GB per round for all 50,000
training images); `--config.gkt.bits=8` cuts that 4x.

Not reproduced from FedML: random-crop/flip augmentation, the
ResNet-56 pretrained initialisation of the edge stems, AMSGrad, and the
server's ReduceLROnPlateau schedule.
"""

from tff_compress import config_lib


def get_config():
  config = config_lib.default_config()
  config.name = 'fedgkt_cifar10'
  config.algorithm = 'fedgkt'
  config.rounds = 200
  config.eval_every = 5
  config.eval_clients = 16
  config.data.name = 'cifar10'
  config.data.num_clients = 16
  config.data.partition = 'dirichlet'
  config.data.dirichlet_alpha = 0.5
  config.clients_per_round = 16
  config.model.name = 'resnet56'
  config.client.epochs = 1
  config.client.batch_size = 256
  config.gkt.edge_model = 'resnet8'
  config.gkt.server_epochs = 20
  config.gkt.server_batch_size = 256
  return config
