"""BrixIA severity regression: DenseNet-121 with a Linear + ReLU head and MSE on the global score
0-18, initialised from an NIH model bundle with conv0 ... transition2 frozen (the paper's setup;
reported MAE 1.93).

python -m train.main \\
    --config train/configs/brixia_regression.py:init_from=runs/nih_bce/best_model \\
    --workdir runs/brixia_regression
"""

from train.config import TrainConfig, check_options

OPTIONS = ("init_from", "manual_dir", "data_dir")


def get_config(options: dict[str, str] | None = None) -> TrainConfig:
    options = check_options(options, OPTIONS)
    return TrainConfig(
        dataset="brixia",
        dataset_config="224",
        data_dir=options.get("data_dir", "~/tensorflow_datasets"),
        manual_dir=options.get("manual_dir"),
        target="global_score",
        label_names=("global_score",),
        arch="densenet121",
        in_channels=3,
        head="relu",
        normalization="imagenet",
        image_size=224,
        init_from=options.get("init_from"),
        freeze_until="transition2",
        task="regression",
        loss="mse",
        optimizer="adam",
        learning_rate=1e-4,
        schedule="cosine",
        epochs=30,
        batch_size=32,
        checkpoint_every_steps=200,
        best_metric="mae",
        best_mode="min",
    )
