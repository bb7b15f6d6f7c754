"""Jinja2 templates, shipped as package data (read with importlib.resources, like schemas/)."""
