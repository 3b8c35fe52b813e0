"""Per-span uncertainty: estimator names (torch-free) and the estimators themselves."""
