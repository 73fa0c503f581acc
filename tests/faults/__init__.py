"""The fault suite: what the runner sees while a dependency fails, and how the broker recovers."""
