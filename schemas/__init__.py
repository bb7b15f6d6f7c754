"""JSON Schemas for every kind Galleon reads, one file per kind.

The Istio kinds are generated from the Istio CRDs by ``generate.py``; the
galleon.io kinds are written by hand. Both are package data so the compiler
finds them the same way whether Galleon is installed or run from a checkout.
"""
