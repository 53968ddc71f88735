"""Shared pieces with no knowledge of tabs: workers, settings, theme, messages, drop zones, Qt workarounds."""
