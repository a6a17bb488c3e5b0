"""The project's steps: one folder per feature, `*_step.py` files discovered at start-up."""
