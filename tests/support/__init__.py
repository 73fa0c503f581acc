"""Reusable test fixtures: real servers and their set-up."""
