"""Pure persistence for HeatPrompt: blobs on disk and rows through SQLAlchemy.

No torch, no UI; never imports `model` or `webapp`.
"""
