"""Example tasks written with the public task API (docs/tasks.md); shipped in the image."""
