"""Run folders rendered as HTML, PDF, Markdown and JSON reports (not yet implemented: see the issues)."""
