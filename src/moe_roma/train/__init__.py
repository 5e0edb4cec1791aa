"""Temporary alias package during the redesign."""
