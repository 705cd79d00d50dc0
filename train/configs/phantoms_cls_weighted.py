"""phantoms_cls with weighted BCE (class c's positive term weighted by #negatives / #positives
on the training split): the second model of Table 3 (BCE vs weighted BCE) on the phantoms.

python -m train.main --config train/configs/phantoms_cls_weighted.py \\
    --workdir runs/phantoms_cls_weighted
"""

from train.config import TrainConfig
from train.configs import phantoms_cls


def get_config() -> TrainConfig:
    return phantoms_cls.get_config().replace(loss="weighted_bce")
