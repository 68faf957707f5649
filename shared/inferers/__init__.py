"""Inferers: how a network is applied to a whole case."""
