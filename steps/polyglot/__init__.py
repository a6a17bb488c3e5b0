"""Polyglot: a TypeScript API step, a Python event step and a JavaScript one, sharing topics."""
