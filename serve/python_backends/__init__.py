"""Sources of python-based Triton backends; copied into a backend directory, not imported."""
