# A package, so that this directory's conftest is imported as `tests.conftest` and never
# shadows the server suite's top-level `conftest` module when both run in one pytest.
