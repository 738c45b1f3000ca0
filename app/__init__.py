"""Streamlit dashboard over audit run folders (not yet implemented: see the issues)."""
