"""The pytest plugin (``pytest11`` entry point): registers the test kit's fixtures."""
