# LazyConfig counterpart of retina_R50.yaml: the paper's R50-FPN 1x on COCO (batch 16, lr 0.01,
# 90k iterations, /10 at 60k and 80k, 800 px). Train with tools/lazyconfig_train_net.py.
from detectron2.model_zoo import get_config

from .common.focal_retinanet import model

dataloader = get_config("common/data/coco.py").dataloader
dataloader.train.mapper.use_instance_mask = False
optimizer = get_config("common/optim.py").SGD
optimizer.lr = 0.01
lr_multiplier = get_config("common/coco_schedule.py").lr_multiplier_1x
train = get_config("common/train.py").train
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.output_dir = "./output/retina_R50_lazy"
