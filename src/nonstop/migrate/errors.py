"""Errors of the migration runner, placed in nonstop's one error tree (nonstop.errors).

UsageError (exit 2)
+-- MigrationSourceError     a migration file is missing, unreadable or not valid SQL (file:line)
+-- DatabaseUrlMissing       no database URL configured
StateError (exit 1)
+-- ChecksumMismatch         an applied migration file was changed afterwards
+-- ContractBlocked          a contract would break a live instance of an older release
+-- MigrationLocked          another `nonstop migrate` runs against the same database
DriverError (exit 1)
+-- DatabaseUnavailable      PostgreSQL cannot be reached
+-- MigrationFailed          a statement failed (file:line and PostgreSQL's message)
    +-- LockRetriesExhausted a lock could not be taken within the retry budget
"""

from __future__ import annotations

from nonstop.errors import DriverError, StateError, UsageError


class MigrationSourceError(UsageError):
    def __init__(self, file: str, message: str, line: int | None = None) -> None:
        self.file = file
        self.line = line
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {message}")


class DatabaseUrlMissing(UsageError):
    pass


class ChecksumMismatch(StateError):
    def __init__(self, file: str, recorded: str, current: str) -> None:
        self.file = file
        self.recorded = recorded
        self.current = current
        super().__init__(
            f"{file} was changed after it was applied (checksum recorded {recorded}, "
            f"file now {current}); write a new migration instead of editing an applied one"
        )


class ContractBlocked(StateError):
    def __init__(self, blockers: list[str]) -> None:
        self.blockers = blockers
        super().__init__("contract refused: " + "; ".join(blockers))


class MigrationLocked(StateError):
    pass


class DatabaseUnavailable(DriverError):
    pass


class MigrationFailed(DriverError):
    def __init__(self, file: str, line: int, message: str) -> None:
        self.file = file
        self.line = line
        super().__init__(f"{file}:{line}: {message}")


class LockRetriesExhausted(MigrationFailed):
    pass
