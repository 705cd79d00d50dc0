"""Named label sets of the supported data sets, in the order the models output them."""

from __future__ import annotations

from pathlib import Path

# NIH ChestX-ray14 in the order of the paper's code (Khakzar et al., 2021).
NIH14 = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)

# torchxrayvision's 18 pathologies, in the order its "all" DenseNet and ResNet-50 output them.
XRV18 = (
    "Atelectasis",
    "Consolidation",
    "Infiltration",
    "Pneumothorax",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Effusion",
    "Pneumonia",
    "Pleural_Thickening",
    "Cardiomegaly",
    "Nodule",
    "Mass",
    "Hernia",
    "Lung Lesion",
    "Fracture",
    "Lung Opacity",
    "Enlarged Cardiomediastinum",
)

LABEL_SETS: dict[str, tuple[str, ...]] = {"nih14": NIH14, "xrv18": XRV18}


def parse_label_names(spec: str | None, num_classes: int) -> tuple[str, ...]:
    """Label names from a command-line spec.

    Args:
      spec: a named set (``nih14``), ``@FILE`` with one name per line, a comma-separated list,
        or ``None`` for ``class_0`` ... ``class_{n-1}``.
      num_classes: the number of outputs the names must match.
    """
    if spec is None:
        names: tuple[str, ...] = tuple(f"class_{i}" for i in range(num_classes))
    elif spec in LABEL_SETS:
        names = LABEL_SETS[spec]
    elif spec.startswith("@"):
        lines = Path(spec[1:]).read_text().splitlines()
        names = tuple(line.strip() for line in lines if line.strip())
    else:
        names = tuple(name.strip() for name in spec.split(","))
    if len(names) != num_classes:
        raise ValueError(
            f"labels: expected {num_classes} names (the model has {num_classes} outputs); "
            f"got {len(names)} from {spec!r}."
        )
    return names
