"""Benchmarks and scorers. Import-light: each module imports what it needs when called."""
