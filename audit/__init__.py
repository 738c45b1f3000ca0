"""Audit checks that turn a model and a data set into findings, and the ``scrutiny`` CLI."""
