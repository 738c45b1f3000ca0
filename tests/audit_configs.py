"""Small audit configs shared by the tests that need a cheap but complete run (reports, app)."""

TABULAR = """
seed = 0

[attributions]
methods = ["integrated_gradients", "kernel_shap"]
samples = 12
quality_samples = 5
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
n_boot = 50

[robustness]
attacks = ["pgd", "gaussian"]
samples = 40
steps = 5
detector = false
"""
