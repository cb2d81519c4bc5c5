"""Test fixtures: tiny models built offline and a scripted chat-completions server."""
