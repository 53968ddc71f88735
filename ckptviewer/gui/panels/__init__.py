"""Panels a checkpoint tab shows beside its tree: details, histogram, safety report."""
