"""Root fixtures. Real-part fixtures live in ``tests/support/`` modules and are plugged in here."""

pytest_plugins = [
    "tests.support.sites",
    "tests.support.bind",
    "tests.support.postgres",
    "tests.support.etcd",
]
