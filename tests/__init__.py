"""The project's tests; a package so that test areas can share helpers (tests.s3_server, ...)."""
