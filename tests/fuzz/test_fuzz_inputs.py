"""Fuzzing with a small, seeded budget: config files, flag documents and migration files are
accepted or refused with a UsageError - never another exception, never a hang (the test's
timeout is the hang guard; benchmarks/fuzz_inputs.py runs a long budget)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.inputs import (
    EXAMPLE_CONFIG,
    check_config,
    check_config_file,
    check_sql,
    config_documents,
    flag_checker,
    flag_documents,
    sql_files,
)

BUDGET = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.timeout(240)
@BUDGET
@given(config_documents())
def test_config_documents(text: str) -> None:
    check_config(text)


@pytest.mark.timeout(240)
@BUDGET
@given(st.binary(max_size=200), st.integers(0, len(EXAMPLE_CONFIG)))
def test_config_files_mutated(noise: bytes, at: int) -> None:
    data = EXAMPLE_CONFIG.encode()
    check_config_file(data[:at] + noise + data[at + len(noise) :])


@pytest.mark.timeout(240)
def test_flag_documents() -> None:
    check, close = flag_checker()
    try:
        BUDGET(given(flag_documents())(check))()
    finally:
        close()


@pytest.mark.timeout(240)
@BUDGET
@given(sql_files())
def test_sql_files(text: str) -> None:
    check_sql(text)
