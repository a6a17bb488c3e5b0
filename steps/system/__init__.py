"""Health, readiness, configuration and housekeeping."""
