#!/usr/bin/python3
"""Check that the tenantapp example suite keeps the promises testshard relies on.

Given an admin (superuser) URL to a running PostgreSQL server, this script creates its own databases, runs the
project's database setup (the ``setup`` commands of ``[tool.testshard.database]``: ``alembic upgrade head`` and
the seed) into a fresh one, clones it the way testshard does (``CREATE DATABASE ... TEMPLATE``), and checks:

1. the whole suite passes serially against the freshly migrated database, and leaves it as it found it;
2. every stage of the reference plan (``[[tool.testshard.stages]]``) selects a non-empty set of tests
   (counts per stage and per marker are printed), and each stage passes on its own (serial wall time printed);
3. a random half of the tests (seeded), run in reverse order, passes;
4. two halves run at the same time on two databases pass, each recording its own database.

It exits non-zero on any failure and drops every database it created. Every child process is started from an
argv list (no shell), as testshard's agent does.

    /usr/bin/python3 scripts/check_suite.py --admin-url 'postgresql://postgres@/postgres?host=/tmp/pgsock'
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import secrets
import subprocess
import sys
import tempfile
import time
import tomllib
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg2
from psycopg2 import sql

PROJECT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable or "/usr/bin/python3"
MARKERS = ("unit", "integration", "security", "slow", "ai", "critical")
RUN_TIMEOUT = 900  # seconds, per pytest run; a hang is a failure, not a stuck CI job
IDENTITY_TEST = "tests/integration/test_health.py::test_database_identity"

# Runs pytest's own collection and its own marker-expression evaluator, so the counts are exactly what
# `pytest -m EXPR` would select. Prints one JSON document on the last line of stdout.
COLLECT_CODE = r"""
import json, sys
import pytest
from _pytest.mark.expression import Expression

stages = json.loads(sys.argv[1])
result = {}

class Collector:
    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items):
        tests = []
        for item in items:
            names = sorted({m.name for m in item.iter_markers()})
            tests.append({"nodeid": item.nodeid, "markers": names})
        result["tests"] = tests
        result["stages"] = {
            name: [t["nodeid"] for t in tests if Expression.compile(expr).evaluate(lambda m, t=t: m in t["markers"])]
            for name, expr in stages.items()
        }

code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider"], plugins=[Collector()])
print(json.dumps(result))
sys.exit(int(code))
"""


class CheckFailed(Exception):
    pass


# ----------------------------------------------------------------------------------------------------------------
# Config and URLs

@dataclass
class Project:
    stages: list[dict]
    setup: list[list[str]]
    role: str
    env: dict[str, str]

    @classmethod
    def load(cls) -> "Project":
        with open(PROJECT / "pyproject.toml", "rb") as f:
            config = tomllib.load(f)["tool"]["testshard"]
        return cls(stages=config["stages"], setup=config["database"]["setup"], role=config["database"]["role"],
                   env={k: str(v) for k, v in config.get("env", {}).items()})


def url_with(admin_url: str, *, database: str, user: str | None = None) -> str:
    """The admin URL with another database (and, for the app role, another user and no password)."""
    parts = urlsplit(admin_url)
    netloc = parts.netloc
    if user is not None:
        hostport = netloc.rpartition("@")[2]
        password = os.environ.get("TENANTAPP_APP_PASSWORD", "")
        userinfo = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
        netloc = f"{userinfo}@{hostport}"
    return urlunsplit((parts.scheme, netloc, "/" + quote(database, safe=""), parts.query, parts.fragment))


# ----------------------------------------------------------------------------------------------------------------
# Databases

class Server:
    def __init__(self, admin_url: str, prefix: str):
        self.admin_url = admin_url
        self.prefix = prefix
        self.created: list[str] = []

    def _connect(self):
        conn = psycopg2.connect(self.admin_url)
        conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
        return conn

    def check_admin(self) -> str:
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT current_user, rolsuper, current_setting('server_version') "
                            "FROM pg_roles WHERE rolname = current_user")
                user, is_super, version = cur.fetchone()
        finally:
            conn.close()
        if not is_super:
            raise CheckFailed(f"--admin-url connects as {user!r}, which is not a superuser; the check creates "
                              f"databases and the app role and runs the seed, which needs RLS bypass")
        return f"{user} on PostgreSQL {version}"

    def create(self, suffix: str, template: str | None = None) -> str:
        name = f"{self.prefix}_{suffix}"
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                if template:
                    cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name),
                                                                                 sql.Identifier(template)))
                else:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            conn.close()
        self.created.append(name)
        return name

    def drop_all(self) -> list[str]:
        errors = []
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                for name in reversed(self.created):
                    try:
                        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                    except psycopg2.Error as exc:
                        errors.append(f"{name}: {exc}".strip())
        finally:
            conn.close()
        return errors

    def snapshot(self, database: str) -> dict[str, str]:
        """Row count and a content checksum per table, read as the admin (RLS does not apply to a superuser)."""
        conn = psycopg2.connect(url_with(self.admin_url, database=database))
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
                tables = [r[0] for r in cur.fetchall()]
                result = {}
                for table in tables:
                    cur.execute(sql.SQL("SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), "
                                        "'')) FROM {} t").format(sql.Identifier(table)))
                    count, digest = cur.fetchone()
                    result[table] = f"{count} rows, md5 {digest}"
            return result
        finally:
            conn.close()


# ----------------------------------------------------------------------------------------------------------------
# Running things

@dataclass
class Outcome:
    label: str
    returncode: int
    seconds: float
    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    order: list[str] = field(default_factory=list)
    properties: dict[str, dict[str, str]] = field(default_factory=dict)
    tail: str = ""
    cpu_seconds: float = 0.0  # user + sys of the pytest process (the server's CPU is not included)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failures == 0 and self.errors == 0 and self.tests > 0


def child_env(project: Project, url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(project.env)
    env["SQLALCHEMY_DATABASE_TEST_URL"] = url
    env["TENANTAPP_APP_ROLE"] = project.role
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_setup(project: Project, admin_url: str, database: str) -> float:
    """The project's database setup commands, as testshard runs them: admin role, template database."""
    env = child_env(project, url_with(admin_url, database=database))
    started = time.monotonic()
    for argv in project.setup:
        argv = [PYTHON if a in ("/usr/bin/python3", "python3") else a for a in argv]
        proc = subprocess.run(argv, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
        if proc.returncode != 0:
            raise CheckFailed(f"setup command {argv} failed ({proc.returncode}) on {database}:\n"
                              f"{proc.stdout[-2000:]}{proc.stderr[-4000:]}")
    return time.monotonic() - started


def collect(project: Project, url: str) -> dict:
    stages = {s["name"]: s["markers"] for s in project.stages}
    proc = subprocess.run([PYTHON, "-c", COLLECT_CODE, json.dumps(stages)], cwd=PROJECT,
                          env=child_env(project, url), capture_output=True, text=True, timeout=RUN_TIMEOUT)
    if proc.returncode != 0:
        raise CheckFailed(f"collection failed ({proc.returncode}):\n{proc.stdout[-4000:]}{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@dataclass
class Running:
    label: str
    junit: Path
    proc: subprocess.Popen
    started: float


def run_pytest(project: Project, url: str, label: str, args: list[str], junit_dir: Path) -> Running:
    junit = junit_dir / f"{label}.xml"
    argv = [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *args]
    started = time.monotonic()
    # Own process group (start_new_session) so a timeout kills pytest and anything it started.
    proc = subprocess.Popen(argv, cwd=PROJECT, env=child_env(project, url), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return Running(label=label, junit=junit, proc=proc, started=started)


def finish(run: Running) -> Outcome:
    try:
        output, _ = run.proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(run.proc.pid, 9)
        output, _ = run.proc.communicate()
        output += f"\n[check_suite] killed after {RUN_TIMEOUT}s"
    outcome = Outcome(label=run.label, returncode=run.proc.returncode, seconds=time.monotonic() - run.started,
                      tail="\n".join(output.splitlines()[-40:]))
    try:
        root = ET.parse(run.junit).getroot()
    except (OSError, ET.ParseError) as exc:
        outcome.tail += f"\n[check_suite] no usable JUnit XML: {exc}"
        return outcome
    for suite in root.iter("testsuite"):
        outcome.tests += int(suite.get("tests", 0))
        outcome.failures += int(suite.get("failures", 0))
        outcome.errors += int(suite.get("errors", 0))
        outcome.skipped += int(suite.get("skipped", 0))
    for case in root.iter("testcase"):
        nodeid = f"{case.get('file')}::{case.get('name')}"
        outcome.order.append(nodeid)
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        if props:
            outcome.properties[nodeid] = props
    return outcome


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_serial(project: Project, url: str, label: str, args: list[str], junit_dir: Path) -> Outcome:
    cpu = children_cpu()
    outcome = finish(run_pytest(project, url, label, args, junit_dir))
    outcome.cpu_seconds = children_cpu() - cpu
    return outcome


# ----------------------------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin-url", required=True,
                        help="superuser URL to a running server, e.g. postgresql://postgres@/postgres?host=/tmp/sock")
    parser.add_argument("--seed", type=int, default=20240614, help="seed for the random halves (default: fixed)")
    options = parser.parse_args()

    project = Project.load()
    server = Server(options.admin_url, prefix=f"tachk_{os.getpid()}_{secrets.token_hex(3)}")
    failures: list[str] = []
    timings: list[tuple[str, float, float | None, str]] = []

    def check(condition: bool, message: str) -> None:
        print(("  ok    " if condition else "  FAIL  ") + message)
        if not condition:
            failures.append(message)

    def report(outcome: Outcome) -> None:
        check(outcome.ok, f"{outcome.label}: {outcome.tests} tests, {outcome.failures} failed, {outcome.errors} "
                          f"errors, {outcome.skipped} skipped, exit {outcome.returncode}, {outcome.seconds:.1f}s")
        if not outcome.ok:
            print("\n".join("        " + line for line in outcome.tail.splitlines()))

    try:
        print(f"server: {server.check_admin()}; databases prefixed {server.prefix}_")
        with tempfile.TemporaryDirectory(prefix="tenantapp-check-") as tmp:
            junit_dir = Path(tmp)

            # -- set-up: a freshly migrated + seeded database, and clones of it -----------------------------------
            fresh = server.create("fresh")
            setup_seconds = run_setup(project, options.admin_url, fresh)
            print(f"setup (migrations + seed) into {fresh}: {setup_seconds:.1f}s")
            # Clones are made before anything runs on the fresh database: every run below starts from pristine
            # data, as a testshard shard does. (Rolled-back inserts leave dead tuples behind, and a later run on
            # the same database pays for them, the slow stage by seconds.)
            started = time.monotonic()
            clone_names = ["rev", "a", "b"] + [f"stage{i}" for i in range(len(project.stages))]
            clones = {name: server.create(name, template=fresh) for name in clone_names}
            print(f"cloned {len(clones)} databases from it (CREATE DATABASE ... TEMPLATE): "
                  f"{time.monotonic() - started:.2f}s")
            app_url = {db: url_with(options.admin_url, database=db, user=project.role)
                       for db in [fresh, *clones.values()]}

            # -- (2) stage and marker selection --------------------------------------------------------------------
            print("\n[2] selection per stage and per marker (pytest's own collection and -m evaluation)")
            collected = collect(project, app_url[fresh])
            all_ids = [t["nodeid"] for t in collected["tests"]]
            print(f"  collected: {len(all_ids)} tests")
            for marker in MARKERS:
                count = sum(marker in t["markers"] for t in collected["tests"])
                print(f"  marker {marker:<12} {count:>4}")
            stage_ids = collected["stages"]
            for stage in project.stages:
                check(len(stage_ids[stage["name"]]) > 0,
                      f"stage {stage['name']!r} ({stage['markers']}) selects {len(stage_ids[stage['name']])} tests")
            unmarked = [t["nodeid"] for t in collected["tests"] if not set(t["markers"]) & set(MARKERS)]
            check(not unmarked, f"every test carries at least one category marker ({len(unmarked)} do not)")

            # -- (1) the whole suite, serially, on the fresh database ----------------------------------------------
            print(f"\n[1] whole suite, serially, on {fresh}")
            before = server.snapshot(fresh)
            whole = run_serial(project, app_url[fresh], "whole-suite", [], junit_dir)
            report(whole)
            timings.append(("whole suite", whole.seconds, whole.cpu_seconds, f"{whole.tests} tests"))
            check(whole.tests == len(all_ids), f"ran every collected test ({whole.tests} of {len(all_ids)})")
            after = server.snapshot(fresh)
            changed = [t for t in before if before[t] != after.get(t)]
            check(not changed, "database left as found (row counts and content checksums of every table)"
                  + (f"; changed: {changed}" if changed else ""))
            recorded = whole.properties.get(IDENTITY_TEST, {})
            check(recorded.get("database") == fresh and recorded.get("role") == project.role,
                  f"record_property: database={recorded.get('database')!r} role={recorded.get('role')!r}")

            print("\n    per stage, serially, each on its own clone:")
            for i, stage in enumerate(project.stages):
                expr = stage["markers"]
                outcome = run_serial(project, app_url[clones[f"stage{i}"]], f"stage-{stage['name']}",
                                     ["-m", expr, f"--maxfail={stage.get('maxfail', 1)}"], junit_dir)
                report(outcome)
                check(outcome.tests == len(stage_ids[stage["name"]]),
                      f"stage {stage['name']!r} ran what collection predicted ({outcome.tests})")
                timings.append((f"stage {stage['name']} (-m '{expr}')", outcome.seconds, outcome.cpu_seconds,
                                f"{outcome.tests} tests"))

            # -- (3) a random half, reversed ------------------------------------------------------------------------
            rng = random.Random(options.seed)
            half = sorted(rng.sample(range(len(all_ids)), len(all_ids) // 2))
            reversed_ids = [all_ids[i] for i in reversed(half)]
            print(f"\n[3] random half (seed {options.seed}), reverse order, on {clones['rev']}")
            rev = run_serial(project, app_url[clones["rev"]], "reverse-half", reversed_ids, junit_dir)
            report(rev)
            check(rev.tests == len(reversed_ids), f"ran all {len(reversed_ids)} requested tests ({rev.tests})")
            check(rev.order == reversed_ids, "pytest executed them in the requested (reversed) order")
            timings.append(("random half, reversed", rev.seconds, rev.cpu_seconds, f"{rev.tests} tests"))

            # -- (4) two halves at the same time on two databases ---------------------------------------------------
            shuffled = all_ids[:]
            rng.shuffle(shuffled)
            halves = [shuffled[: len(shuffled) // 2], shuffled[len(shuffled) // 2:]]
            for h in halves:  # both record their database, to show they really had different ones
                if IDENTITY_TEST not in h:
                    h.append(IDENTITY_TEST)
            print(f"\n[4] two halves at once, on {clones['a']} and {clones['b']}")
            started = time.monotonic()
            procs = [run_pytest(project, app_url[clones[name]], f"concurrent-{name}", ids, junit_dir)
                     for name, ids in zip(("a", "b"), halves)]
            with ThreadPoolExecutor(max_workers=2) as pool:
                outcomes = list(pool.map(finish, procs))
            wall = time.monotonic() - started
            for name, outcome, ids in zip(("a", "b"), outcomes, halves):
                report(outcome)
                check(outcome.tests == len(ids), f"half {name} ran all {len(ids)} requested tests")
                db = outcome.properties.get(IDENTITY_TEST, {}).get("database")
                check(db == clones[name], f"half {name} recorded database {db!r}")
            timings.append(("two halves concurrently (wall)", wall, None,
                            f"{sum(o.tests for o in outcomes)} tests, "
                            f"{' + '.join(f'{o.seconds:.1f}s' for o in outcomes)}"))
    except CheckFailed as exc:
        failures.append(str(exc))
        print(f"  FAIL  {exc}")
    finally:
        errors = server.drop_all()
        if errors:
            failures.append(f"could not drop: {errors}")
        print(f"\ndropped {len(server.created) - len(errors)} of {len(server.created)} databases")

    if timings:
        print(f"\nserial wall times (pytest process start to exit, incl. collection; cpu = the pytest process's "
              f"user+sys, a load-independent check; load average now {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} cores):")
        for label, seconds, cpu, detail in timings:
            cpu_text = f"cpu {cpu:5.1f}s" if cpu is not None else " " * 9
            print(f"  {label:<48} {seconds:7.1f}s  {cpu_text}  {detail}")
    print(f"\n{'PASS' if not failures else 'FAIL'}: {len(failures)} failed check(s)")
    for failure in failures:
        print(f"  - {failure.splitlines()[0]}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
