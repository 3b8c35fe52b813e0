"""Names shared by light modules (no torch import): uncertainty estimators."""

ESTIMATOR_NAMES = ("confidence", "entropy", "mc_dropout", "evidential")
EVIDENTIAL = "evidential"


def available_estimators(evidential: bool) -> list[str]:
    """Estimator names a model supports (evidential only for evidential models)."""
    return [name for name in ESTIMATOR_NAMES if evidential or name != EVIDENTIAL]
