"""Thin adapters from training frameworks to the gradwatch core, imported on demand."""
