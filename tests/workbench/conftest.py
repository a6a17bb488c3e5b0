"""Workbench tests run the demo project at INFO (step logs are what the Workbench shows)."""

from __future__ import annotations

import logging

# configure_logging() opens the standard library's logs at INFO too: httpx would log each request.
logging.getLogger("httpx").setLevel(logging.WARNING)
