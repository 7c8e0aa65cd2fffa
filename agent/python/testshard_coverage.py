"""testshard's coverage helper: a pytest plugin for the agent's pytest processes, and the agent's report script.

As a plugin (``-p testshard_coverage``, next to pytest-cov's ``--cov``) it

  * records which Python runs the tests (TESTSHARD_COVERAGE_PYTHON names the file), so the agent can combine the
    data later with the same interpreter and the same coverage.py, and
  * writes what coverage.py measured to its data file after every test. pytest-cov writes only when the session
    ends; a worker that crashes or is killed for a hang would otherwise lose everything it measured, and with this
    it loses only the test it was running. (coverage.py does the same flush when pytest-cov's --cov-context
    switches contexts between tests.)

As a script the agent runs it once, when the run is done:

  python testshard_coverage.py --out coverage.xml --data-file DIR/.coverage [--branch] [--source S]... FILE...

It combines the data files of every pytest process the agent started (each measured into a directory of its
own, including the partial data of a crashed one) and writes one Cobertura report. It runs in the project's
workdir, so the project's own coverage configuration (omit, exclude_lines, ...) applies as it does to a serial
``pytest --cov``. Exit status 0 with a report, 5 when there was no data to report, 1 on an error.
"""

import os
import sys

_PYTHON_ENV = "TESTSHARD_COVERAGE_PYTHON"
_NO_DATA = 5
_FLUSH = {"config": None, "off": False}  # the session's config once it starts; off after a failed flush


def _measuring(config):
    """pytest-cov's running Coverage object, or None."""
    plugin = config.pluginmanager.getplugin("_cov")
    controller = getattr(plugin, "cov_controller", None)
    return getattr(controller, "cov", None)


def pytest_configure(config):
    path = os.environ.get(_PYTHON_ENV)
    if not path or hasattr(config, "workerinput"):
        return
    try:
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(sys.executable + "\n")
        os.replace(path + ".tmp", path)
    except OSError:
        pass  # the agent then reports that it cannot combine, naming the missing file


def pytest_runtest_logfinish(nodeid, location):
    if _FLUSH["off"]:
        return
    cov = _measuring(_FLUSH["config"]) if _FLUSH["config"] is not None else None
    collector = getattr(cov, "_collector", None)
    flush = getattr(collector, "flush_data", None)
    if flush is None:
        return
    try:
        flush()
    except Exception as error:  # a coverage.py without this internal: measure on, save at the end as usual
        _FLUSH["off"] = True
        sys.stderr.write("testshard: coverage is saved only at the end of this session: %s\n" % error)


def pytest_sessionstart(session):
    _FLUSH["config"] = session.config


def _report(argv):
    import argparse

    parser = argparse.ArgumentParser(prog="testshard_coverage")
    parser.add_argument("--out", required=True)
    parser.add_argument("--data-file", required=True)
    parser.add_argument("--source", action="append", default=[])
    parser.add_argument("--branch", action="store_true")
    parser.add_argument("files", nargs="*")
    args = parser.parse_args(argv)

    import coverage
    from coverage.exceptions import NoDataError

    for stale in (args.data_file, args.out):
        if os.path.exists(stale):
            os.remove(stale)
    files = [f for f in args.files if os.path.isfile(f)]
    if not files:
        return _NO_DATA
    cov = coverage.Coverage(
        data_file=args.data_file,
        source=args.source or None,
        branch=True if args.branch else None,
        config_file=True,
    )
    # keep: the inputs stay where they are, so a second report (after an upload failed) sees them all again.
    cov.combine(files, keep=True)
    cov.save()
    try:
        cov.xml_report(outfile=args.out + ".tmp", ignore_errors=True)
    except NoDataError:
        return _NO_DATA
    os.replace(args.out + ".tmp", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(_report(sys.argv[1:]))
