"""What an evaluation run is set to (``EvaluationConfig``) and the methods it runs by default."""

from __future__ import annotations

import dataclasses
from typing import Literal

from iba_jax import checks
from iba_jax.methods import METHODS, MethodSettings
from iba_jax.metrics import localisation

CLASSIFICATION_METHODS = (
    "iba",
    "inverse_iba",
    "multilayer_iba",
    "gradients",
    "integrated_gradients",
    "grad_cam",
    "lrp",
    "random",
)
REGRESSION_METHODS = (
    "regression_iba_mse",
    "regression_iba_rm",
    "regression_iba_deviation",
    "gradients",
    "integrated_gradients",
    "grad_cam",
    "lrp",
    "random",
)


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """Settings of an evaluation run.

    Attributes:
      methods: names from ``METHODS`` (``CLASSIFICATION_METHODS`` by default;
        ``REGRESSION_METHODS`` for severity models).
      iou_rule: how maps are binarised for IoU and for marking instances
        (``localisation.RULES``; "area" keeps as many pixels as the ground truth has).
      pixels_per_step: insertion/deletion step (default 1/50 of the image).
      baseline: what replaces removed pixels in insertion/deletion and Sensitivity-N: "blur"
        (a Gaussian blur of ``blur_sigma`` pixels, the paper's choice) or "zero". Blurring
        hardly changes a diffuse opacity, so severity models are better probed with "zero".
      blur_sigma: the blurred baseline's sigma (pixels; the paper: 10).
      sensitivity_samples: random pixel subsets per size of Sensitivity-N (0 skips it; each
        costs one forward pass per size).
      settings: the methods' settings (the paper's defaults).
      seed: the PRNG seed of the noise of IBA, of the random maps and of Sensitivity-N's subsets
        (one key per image and target).
      limit: evaluate only the first N images of the split.
      cases_per_call: cases whose maps one call computes, per method (a multiple of the
        devices, to use them all; it changes no value, beyond float rounding).
    """

    methods: tuple[str, ...] = CLASSIFICATION_METHODS
    iou_rule: localisation.Rule = "area"
    pixels_per_step: int | None = None
    baseline: Literal["blur", "zero"] = "blur"
    blur_sigma: float = 10.0
    sensitivity_samples: int = 32
    settings: MethodSettings = MethodSettings()
    seed: int = 0
    limit: int | None = None
    cases_per_call: int = 1

    def __post_init__(self) -> None:
        checks.check_names("methods", self.methods, tuple(METHODS))
        checks.check_positive_int("cases_per_call", self.cases_per_call)
        checks.check_choice("iou_rule", self.iou_rule, localisation.RULES)
        checks.check_choice("baseline", self.baseline, ("blur", "zero"))
        if not (isinstance(self.sensitivity_samples, int) and self.sensitivity_samples >= 0):
            raise ValueError(
                "sensitivity_samples: expected an int >= 0 (0 skips Sensitivity-N); got "
                f"{self.sensitivity_samples!r}."
            )
