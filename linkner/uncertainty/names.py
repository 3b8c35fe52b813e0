"""Names shared by light modules (no torch import): uncertainty estimators."""

ESTIMATOR_NAMES = ("confidence", "entropy", "mc_dropout", "evidential", "learned")
EVIDENTIAL = "evidential"
LEARNED = "learned"  # the checkpoint's fitted error detector (error_detector.json beside the weights)


def available_estimators(evidential: bool, learned: bool = False) -> list[str]:
    """Estimator names a model supports (evidential only for evidential models, learned only with a
    fitted error detector that matches the checkpoint)."""
    return [name for name in ESTIMATOR_NAMES
            if (evidential or name != EVIDENTIAL) and (learned or name != LEARNED)]
