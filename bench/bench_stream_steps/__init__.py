"""Steps of bench/streams.py (not part of the sample application)."""
