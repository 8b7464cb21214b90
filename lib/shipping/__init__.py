"""Shipping a submission: model bundles and prediction from a bundle alone (code competitions)."""
