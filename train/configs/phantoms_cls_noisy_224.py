"""phantoms_cls_noisy at 224 px: does a larger image make denseblock3 local? (issue 15)

python -m train.main --config train/configs/phantoms_cls_noisy_224.py \
    --workdir runs/phantoms_cls_noisy_224
The same network and label noise as phantoms_cls_noisy on cxr_phantoms classification_224. Its
denseblock3 is a 14x14 grid whose cells still see 359 px, more than the image, and yet local
(`iba-jax layer-locality`; at 128 px it is not): the paper's layer can be tested here.
Shipped as phantoms_cls_noisy_224 (iba_jax/pretrained/README.md; docs/results.md).
"""

from train.config import TrainConfig
from train.configs import phantoms_cls_noisy


def get_config() -> TrainConfig:
    return phantoms_cls_noisy.get_config().replace(
        dataset_config="classification_224", image_size=224
    )
