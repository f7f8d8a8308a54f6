"""Planning runs into steps and executing steps; the in-process runner."""
