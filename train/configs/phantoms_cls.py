"""The shipped phantom classifier: a small DenseNet on cxr_phantoms classification_128.

python -m train.main --config train/configs/phantoms_cls.py --workdir runs/phantoms_cls
Target (issue 5): mean ROC AUC >= 0.95 on the phantom test split.
"""

from iba_jax.data.phantoms import FINDINGS
from train.config import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        dataset="cxr_phantoms",
        dataset_config="classification_128",
        target="labels",
        label_names=FINDINGS,
        arch="tiny",
        arch_overrides={
            "growth_rate": 12,
            "block_config": (2, 4, 8, 6),
            "num_init_features": 24,
        },
        in_channels=1,
        head="sigmoid",
        normalization="none",
        image_size=128,
        optimizer="adam",
        learning_rate=3e-3,
        weight_decay=1e-4,
        schedule="cosine",
        warmup_steps=100,
        epochs=12,
        batch_size=32,
        checkpoint_every_steps=200,
        best_metric="mean_auc",
        best_mode="max",
    )
