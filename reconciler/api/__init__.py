"""Generated code of the status API (proto/galleon/v1/reconciler.proto), made by setup.py at build time."""
