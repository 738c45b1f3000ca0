"""Audit checks that turn a model and a data set into findings, and the ``scrutiny`` CLI.

Import the submodules by name (``from scrutiny.audit import fairness``); this file imports
nothing, so that the CLI starts without torch.
"""
