"""Policy: which credential a validated identity may have. Pure functions over plain data."""
