"""Secrets: redaction in logs, token hashing, and a server that refuses to start without a token."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys

from api.security import RedactSecrets, hash_token, new_token, tokens_equal


def test_log_records_lose_bearer_tokens_and_known_secrets() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "header %s and %s", ("Bearer abc.DEF-123", "op-secret"),
                               None)
    assert RedactSecrets(["op-secret"]).filter(record)
    assert record.getMessage() == "header Bearer *** and ***"
    untouched = logging.LogRecord("x", logging.INFO, __file__, 1, "step %d", (3,), None)
    RedactSecrets(["op-secret"]).filter(untouched)
    assert untouched.getMessage() == "step 3"


def test_run_tokens_are_random_and_stored_as_sha256() -> None:
    first, second = new_token(), new_token()
    assert first != second and len(first) >= 40
    assert hash_token(first) == hashlib.sha256(first.encode()).hexdigest()
    assert tokens_equal(first, first) and not tokens_equal(first, second)


def test_the_server_does_not_start_without_a_token() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TCL_")}
    result = subprocess.run([sys.executable, "-m", "api"], env=env, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 2
    assert "invalid settings" in result.stderr and "token" in result.stderr
