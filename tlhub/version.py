"""tlhub's version, in one place: the package metadata (pyproject.toml reads it from here) and
the feature cache's key use it, also when tlhub runs from a source checkout without `pip install`."""

__version__ = "0.1.0"
