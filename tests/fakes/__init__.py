"""Small fake servers that echo what they were asked, so tests can assert it."""
