"""Searchers: pick an architecture in a search space that meets a budget."""
