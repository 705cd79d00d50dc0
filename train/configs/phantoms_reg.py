"""The shipped phantom regressor: a small DenseNet on cxr_phantoms regression_128 (BrixIA-like).

python -m train.main --config train/configs/phantoms_reg.py --workdir runs/phantoms_reg
Target (issue 5): MAE <= 1.5 (global score 0-18) on the phantom test split.
"""

from train.config import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        dataset="cxr_phantoms",
        dataset_config="regression_128",
        target="global_score",
        label_names=("global_score",),
        arch="tiny",
        arch_overrides={
            "growth_rate": 12,
            "block_config": (2, 4, 8, 6),
            "num_init_features": 24,
        },
        in_channels=1,
        head="relu",
        normalization="none",
        image_size=128,
        task="regression",
        loss="mse",
        optimizer="adam",
        learning_rate=3e-3,
        weight_decay=1e-4,
        schedule="cosine",
        warmup_steps=100,
        epochs=12,
        batch_size=32,
        checkpoint_every_steps=200,
        best_metric="mae",
        best_mode="min",
    )
