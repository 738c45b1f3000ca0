"""Small audit configs shared by the tests that need a cheap but complete run (reports, app)."""

TABULAR = """
seed = 0

[attributions]
methods = ["integrated_gradients", "kernel_shap"]
samples = 12
quality_samples = 5
stability_rows = 5
n_boot = 50

[robustness]
attacks = ["pgd", "gaussian"]
samples = 40
steps = 5
detector = false

[fairness]
n_boot = 50
"""

IMAGE = """
seed = 0

[attributions]
methods = ["integrated_gradients", "saliency"]
samples = 12
quality_samples = 5
stability_rows = 5
n_boot = 50

[robustness]
attacks = ["pgd", "gaussian"]
samples = 40
steps = 5
detector = false
"""

# appended to TABULAR and IMAGE by the report and app tests, whose runs then show randomized
# smoothing (about +0.5 s per Adult audit, +2 s per digits audit on one CPU thread); kept out of
# the two configs themselves, whose other users (test_executors) count every chunk of work
CERTIFICATION = """
[robustness.certification]
sigma = 0.25
samples = 8
n0 = 20
n = 100
alpha = 0.01
"""
