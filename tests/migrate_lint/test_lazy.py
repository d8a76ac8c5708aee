"""The fast path (decode only the statements and sub-trees the rules read) gives exactly the
findings of the full-tree path, on the benchmark's generated corpus and on hand-written edge
cases, in every phase."""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import msgspec
import pytest

from nonstop.migrate.lint import LintOptions, apply_fixes, lint_text, tree
from nonstop.migrate.lint.engine import NEEDED, lazy_statements, parse
from nonstop.migrate.lint.registry import DISPATCH
from nonstop.migrate.lint.source import Source
from nonstop.migrate.lint.sqltext import names_of
from nonstop.migrate.phases import PHASES

from .test_robust import DIVERSE
from .test_rules import CASES

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_lint.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_lint", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_lint", module)
    spec.loader.exec_module(module)
    return module


# Forms the generator does not write: set_config in a SELECT (read by the state), WHERE only in
# a sub-query or a CTE (not the UPDATE's own), statements the rules never read, non-ASCII text,
# comments around and inside statements, and a last statement without a semicolon.
EDGES = r'''
SELECT set_config('lock_timeout', '0', false);
ALTER TABLE app.t ADD COLUMN c int NOT NULL;
SELECT pg_catalog.SET_CONFIG('lock_timeout', '3s', true), 1 FROM app.t WHERE x = 'set_config';
BEGIN;
ALTER TABLE app.t ADD COLUMN d int NOT NULL;
COMMIT;
ALTER TABLE app.t ADD COLUMN e int NOT NULL;
UPDATE app.t SET a = (SELECT max(b) FROM app.u WHERE u.id = t.id);
WITH old AS (SELECT id FROM app.t WHERE a < 0) UPDATE app.t SET a = 0 FROM old WHERE true;
WITH gone AS (DELETE FROM app.u WHERE b IS NULL RETURNING id) DELETE FROM app.t;
DELETE FROM "Odd ""Table""" USING app.u WHERE "Odd ""Table""".id = u.id;
UPDATE ONLY app.t AS x SET a = DEFAULT;
INSERT INTO app.t (note) VALUES ('{"stmt":{"UpdateStmt":{}}},"stmt_len":1}]}');
SELECT '"stmt_location":5,"stmt_len":9}' AS trap /* ;{"stmt":{" */;
CREATE VIEW app.v AS SELECT * FROM app.t WHERE note <> 'é ü 😀';
CREATE INDEX ON app.t (lower(note)) WHERE note <> 'ñ' ;
  -- nonstop-lint: ignore=create-index-without-concurrently reason="small table"
CREATE INDEX t_b ON app.t (b);
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "i{x" ON app.t (a) WHERE b <> '"concurrent":true';
CREATE INDEX "j{" ON app.t (a) WHERE b IN (SELECT 1);
BEGIN;
CREATE INDEX CONCURRENTLY ON app.t ((a + 1));
COMMIT;
DROP INDEX app.t_b /* trailing */ ;
SET lock_timeout = '2s';
ALTER TABLE app.t ALTER COLUMN e SET NOT NULL
'''


@pytest.fixture(scope="module")
def generated() -> str:
    return str(_bench().corpus(3000, seed=11))


def _both(text: str, phase: str, pg: int, assume: bool) -> None:
    options = LintOptions(pg_version=pg, assume_lock_timeout=assume)
    fast = lint_text(text, "m.sql", phase=phase, options=options)  # type: ignore[arg-type]
    full = lint_text(text, "m.sql", phase=phase, options=options, full_tree=True)  # type: ignore[arg-type]
    assert fast == full
    assert fast or phase == "contract"  # every phase finds something in these files


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize(("pg", "assume"), [(16, False), (10, True)])
def test_generated_corpus_same_findings(generated: str, phase: str, pg: int, assume: bool) -> None:
    _both(generated, phase, pg, assume)


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("text", [EDGES, DIVERSE, EDGES + ";\n" + DIVERSE.rstrip().rstrip(";")])
def test_edge_cases_same_findings(text: str, phase: str) -> None:
    _both(text, phase, 16, False)


@pytest.mark.parametrize(("sql", "phase", "pg"), [c[1:4] for c in CASES], ids=[c[0] for c in CASES])
def test_every_rule_table_case_same_findings(sql: str, phase: str, pg: int) -> None:
    """Each worked example of the rules table, read the fast way and from the full tree."""
    options = LintOptions(pg_version=pg)
    fast = lint_text(sql, "m.sql", phase=phase, options=options)  # type: ignore[arg-type]
    full = lint_text(sql, "m.sql", phase=phase, options=options, full_tree=True)  # type: ignore[arg-type]
    assert fast == full


@pytest.mark.parametrize(
    "text",
    [
        EDGES,
        DIVERSE,
        "",
        "-- only a comment\n",
        "SELECT 1",
        "  /* c */ BEGIN; COMMIT",
        "SELECT 'é';;SELECT 'ü'",
    ],
)
def test_statement_kinds_and_positions_match_the_full_tree(text: str) -> None:
    source = Source("m.sql", text)
    full = parse(source)
    lazy = lazy_statements(source, None)
    assert [s.kind for s in lazy] == [next(iter(item["stmt"])) for item in full]
    assert [s.start for s in lazy] == [item.get("stmt_location", 0) for item in full]
    lengths = [item.get("stmt_len", 0) for item in full]
    assert [s.length for s in lazy][:-1] == lengths[:-1]


def test_statement_kinds_no_rule_reads_are_not_decoded() -> None:
    text = (
        "INSERT INTO t VALUES (1); SELECT a + 1 FROM t WHERE b; UPDATE t SET a = 1 WHERE b;"
        " SELECT set_config('lock_timeout', '1s', false), lower(x), y;"
    )
    source = Source("m.sql", text)
    insert, select, update, set_config = lazy_statements(source, "expand")
    assert insert.node == {}
    assert select.node == {}  # no set_config in its text: not decoded
    relation = {"relname": "t", "inh": True, "relpersistence": "p", "location": text.index("t SET")}
    assert update.node["relation"] == relation
    assert set(update.node) == {"relation", "whereClause"}  # the clause itself undecoded
    # with it: only the function calls at the top of its target list
    targets = [t["ResTarget"]["val"] for t in set_config.node["targetList"]]
    assert targets[2] == {}  # a column, not a call
    calls = [val["FuncCall"] for val in targets[:2]]
    assert [names_of(call["funcname"]) for call in calls] == [["set_config"], ["lower"]]
    assert len(calls[0]["args"]) == 3
    assert "InsertStmt" not in NEEDED
    assert "InsertStmt" not in DISPATCH


def test_plain_output_to_a_pipe_does_not_load_rich(tmp_path: Path) -> None:
    path = tmp_path / "0001.sql"
    path.write_text("ALTER TABLE users RENAME COLUMN email TO mail;\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    code = (
        "import atexit, sys; "
        "atexit.register(lambda: sys.stderr.write(f'rich loaded: {\"rich\" in sys.modules}')); "
        "from nonstop.cli.migrate_lint import lint; lint()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "--phase", "expand", str(path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr == "rich loaded: False"
    assert "[rename-column]" in done.stdout
    assert "\x1b[" not in done.stdout


def test_unexpected_json_layout_falls_back_to_the_full_tree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    full = lint_text(EDGES, "m.sql", phase="expand", full_tree=True)

    class Other(msgspec.Struct):  # a layout the parser does not write: every cut fails
        stmts: list[int]

    monkeypatch.setattr(tree, "_TREE", msgspec.json.Decoder(Other))
    assert lint_text(EDGES, "m.sql", phase="expand") == full
    assert apply_fixes(EDGES, full) != EDGES


@pytest.mark.parametrize(
    ("kind", "node", "expected"),
    [
        # only the three fields read are kept, wherever they are
        ("IndexStmt",
         '{"idxname":"i","relation":{"relname":"t"},"accessMethod":"btree","concurrent":true}',
         {"idxname": "i", "relation": {"relname": "t"}, "concurrent": True}),
        ("IndexStmt", '{"accessMethod":"btree","relation":{"relname":"t"},"idxname":"a{b"}',
         {"idxname": "a{b", "relation": {"relname": "t"}}),
        # "concurrent":true inside a string is not the field
        ("IndexStmt",
         '{"relation":{"relname":"t"},"whereClause":{"A_Const":{"sval":{"sval":"\\"concurrent\\":true"}}}}',
         {"relation": {"relname": "t"}}),
        # a field of another type than the schema's (a parser upgrade): the whole node
        ("IndexStmt", '{"idxname":["i"],"relation":{"relname":"t"},"unique":true}',
         {"idxname": ["i"], "relation": {"relname": "t"}, "unique": True}),
        # a kind without a schema: the whole node
        ("DropStmt", '{"objects":[{"List":{"items":[]}}],"removeType":"OBJECT_TABLE"}',
         {"objects": [{"List": {"items": []}}], "removeType": "OBJECT_TABLE"}),
    ],
)  # fmt: skip
def test_statements_are_read_in_part(kind: str, node: str, expected: dict[str, object]) -> None:
    (entry,) = tree.cut(f'{{"version":1,"stmts":[{{"stmt":{{"{kind}":{node}}}}}]}}')
    assert tree.node(kind, entry.stmt[kind]) == expected
    assert tree.whole(entry.stmt[kind]) == json.loads(node)


_HEAVY = (
    "aiohttp",
    "psycopg",
    "pydantic",
    "rich",
    "alembic",
    "django",
    "concurrent",
    "tomllib",
    "traceback",
    "click",  # the plain JSON lint runs without the click CLI (cli/lint_fast.py)
)


def test_the_lint_command_imports_only_what_linting_needs(tmp_path: Path) -> None:
    """`nonstop migrate lint --json FILE`, through the program's entry point: no agent client,
    no database driver, no config schema (not even the TOML parser without a nonstop.toml), no
    framework, no traceback module (only a defect prints one), not even click (the plain JSON
    lint skips the CLI framework); and no thread pool for a small file."""
    path = tmp_path / "0001.sql"
    path.write_text("CREATE INDEX i ON t (a);\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    code = (
        "import atexit, sys; "
        f"heavy = {_HEAVY!r}; "
        "atexit.register(lambda: sys.stderr.write('loaded: ' + repr(sorted("
        "{m.split('.')[0] for m in sys.modules} & set(heavy))))); "
        "from nonstop.cli.main import main; main(sys.argv[1:])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "migrate", "lint", "--json", str(path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.endswith("loaded: []"), done.stderr
    assert '"rule": "create-index-without-concurrently"' in done.stdout


def test_the_program_freezes_what_is_alive_at_exit_a_caller_of_main_does_not(
    tmp_path: Path,
) -> None:
    """`nonstop` (main with no argv) leaves its objects out of the shutdown collections; a
    test or tool that calls ``main([...])`` in its own process keeps its collector as it was."""
    from nonstop.cli.main import main

    path = tmp_path / "0001.sql"
    path.write_text("SET lock_timeout = '1s';\nCREATE TABLE t (a int);\n", encoding="utf-8")
    before = gc.get_freeze_count()
    with pytest.raises(SystemExit) as exited:
        main(["migrate", "lint", "--format", "json", str(path)])
    assert exited.value.code == 0
    assert gc.get_freeze_count() == before
    code = (
        "import atexit, gc, sys; "
        "atexit.register(lambda: sys.stderr.write(f'frozen: {gc.get_freeze_count() > 0}')); "
        "sys.argv = ['nonstop', 'migrate', 'lint', '--format', 'json', sys.argv[1]]; "
        "from nonstop.cli.main import main; main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.endswith("frozen: True"), done.stderr
    assert done.stdout.strip() == "[]"


def test_pglast_enums_and_ast_load_on_first_use() -> None:
    """The lint command loads the parser without running pglast's enums and AST modules; any
    code in the same process that uses them afterwards gets the real modules."""
    code = """
import sys
from nonstop.migrate.lint import load_engine
load_engine()
from nonstop.migrate.lint import lint_text
found = lint_text("SET lock_timeout = 1; CREATE INDEX i ON t (a);", "m.sql", phase="expand")
assert [f.rule for f in found] == ["create-index-without-concurrently"], found
assert "pglast.enums.parsenodes" not in sys.modules and "pglast.ast" in sys.modules
assert type(sys.modules["pglast.ast"]).__name__ == "_Deferred"
import pglast
import pglast.enums
from pglast import ast, parse_sql
from pglast.enums.parsenodes import AlterTableType
stmt = parse_sql("ALTER TABLE t ADD COLUMN a int")[0].stmt
assert isinstance(stmt, ast.AlterTableStmt) and isinstance(ast, type(sys))
added = AlterTableType.AT_AddColumn
assert stmt.cmds[0].subtype is pglast.enums.AlterTableType.AT_AddColumn is added
assert sys.modules["pglast.enums"] is pglast.enums
assert "AlterTableStmt" in dir(ast)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"


def test_the_program_lints_sql_files_without_the_framework_code(tmp_path: Path) -> None:
    """Through the ``nonstop`` program's entry point, the plain JSON lint of SQL files does not
    load the framework code that looks for an Alembic or Django project to render."""
    path = tmp_path / "0001.sql"
    path.write_text("SET lock_timeout = '1s';\nCREATE TABLE t (a int);\n", encoding="utf-8")
    code = (
        "import atexit, sys; "
        "atexit.register(lambda: sys.stderr.write("
        "f'frameworks: {\"nonstop.migrate.frameworks\" in sys.modules}')); "
        "sys.argv = ['nonstop', *sys.argv[1:]]; "
        "from nonstop.cli.entry import main; main()"
    )
    args = ["migrate", "lint", "--format", "json", str(path)]
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.endswith("frameworks: False"), done.stderr
    assert done.stdout.strip() == "[]"
