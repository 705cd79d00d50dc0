"""Seconds on a CPU; used by the tests: a tiny DenseNet on 32 phantom images, 3 epochs.

python -m train.main --config train/configs/smoke.py --workdir /tmp/smoke
"""

from iba_jax.data.phantoms import FINDINGS
from train.config import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        dataset="cxr_phantoms",
        dataset_config="classification_64_mini",
        eval_split="validation",
        target="labels",
        label_names=FINDINGS,
        arch="tiny",
        in_channels=1,
        head="sigmoid",
        normalization="none",
        image_size=64,
        learning_rate=3e-3,
        epochs=3,
        batch_size=8,
        checkpoint_every_steps=2,
        keep_checkpoints=10,
    )
