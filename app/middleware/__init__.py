"""The platform layer between HTTP and the steps: errors, tracing, locale, auth, CORS, limits."""
