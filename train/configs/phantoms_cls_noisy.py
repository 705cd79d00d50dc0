"""phantoms_cls trained on noisy labels: a less confident classifier, as real ones are.

python -m train.main --config train/configs/phantoms_cls_noisy.py --workdir runs/phantoms_cls_noisy
A fifth of the training labels flipped (fixed per example, like an annotator's mistakes): the
best predicted probability of a finding that is there is 0.8, not 1, so IBA's classification
loss stays of the order of its information term (issue 15: phantoms_cls reaches BCE 1e-6 to
1e-3 on its test images, and β·information drives the optimisation alone).
"""

from train.config import TrainConfig
from train.configs import phantoms_cls


def get_config() -> TrainConfig:
    return phantoms_cls.get_config().replace(label_noise=0.2)
