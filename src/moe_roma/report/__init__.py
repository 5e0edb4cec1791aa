"""Results tables (markdown) and plots (PNG)."""
