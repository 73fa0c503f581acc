"""Backend tests, against real servers."""
