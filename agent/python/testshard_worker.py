"""testshard's pytest worker: collects once, then runs the test ids the agent sends, one batch at a time.

Loaded into the project's own pytest with ``-p testshard_worker``; active only when TESTSHARD_WORKER_SOCKET names
the agent's unix socket. The agent and the worker exchange JSON lines:

  agent -> worker   {"type": "select", "markers": "unit and critical"}   ids of a stage, in collection order
                    (with "group_marker": NAME, also each id's group key: see _group_key)
                    {"type": "run", "ids": [...]}                          append to the queue and run
                    {"type": "flush"}                                      run the held-back last test now
                    {"type": "stop"}                                       finish the session
  worker -> agent   {"type": "ready", "count": N, "pid": P}                collected, or
                    {"type": "collect_error", "text": "..."}
                    {"type": "selected", "ids": [...], "groups": [...]} or {"type": "select_error", "text": "..."}
                    {"type": "start", "id": ...}                           a test begins (for hang and crash detection)
                    {"type": "result", ...}                                a test's outcome, as pytest's junitxml sees it
                    {"type": "unknown", "id": ...}                         an id this session did not collect

Like pytest-xdist, the last queued test is held back until the next one is known, so module- and class-scoped
fixtures are torn down exactly when pytest would tear them down in a serial run.
"""

import json
import os
import socket
import time

import pytest

try:  # pytest's own marker-expression grammar, so a stage selects what ``pytest -m`` would
    from _pytest.mark.expression import Expression
except ImportError:  # pragma: no cover
    Expression = None

_SOCKET_ENV = "TESTSHARD_WORKER_SOCKET"
_MAX_TEXT = 256 * 1024


def _clip(text):
    if text is None:
        return ""
    text = str(text)
    if len(text) <= _MAX_TEXT:
        return text
    half = _MAX_TEXT // 2
    return text[:half] + "\n... [testshard: %d characters trimmed] ...\n" % (len(text) - 2 * half) + text[-half:]


class _Channel:
    def __init__(self, path):
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(path)
        self._reader = self._sock.makefile("r", encoding="utf-8", newline="\n")

    def send(self, **message):
        data = (json.dumps(message, ensure_ascii=False) + "\n").encode("utf-8")
        self._sock.sendall(data)

    def receive(self):
        line = self._reader.readline()
        if not line:
            return {"type": "stop"}  # the agent went away: finish cleanly
        return json.loads(line)


class _Result:
    """Folds the setup/call/teardown reports of one test into one outcome, the way junitxml does."""

    def __init__(self, nodeid):
        self.nodeid = nodeid
        self.outcome = "passed"
        self.message = ""
        self.type = ""
        self.details = ""
        self.phases = {}
        self.stdout = []
        self.stderr = []
        self.properties = []

    def add(self, report):
        self.phases[report.when] = getattr(report, "duration", 0.0)
        for name, value in getattr(report, "user_properties", []) or []:
            if [str(name), str(value)] not in self.properties:
                self.properties.append([str(name), str(value)])
        for section, content in getattr(report, "sections", []):
            if "stdout" in section:
                self.stdout.append(content)
            elif "stderr" in section or "log" in section:
                self.stderr.append(content)
        if hasattr(report, "wasxfail"):
            if report.skipped:
                self._set("skipped", "xfail: " + str(report.wasxfail), "pytest.xfail", "")
            elif report.failed:  # strict xpass
                self._set("failed", "[XPASS(strict)] " + str(report.wasxfail), "", "")
            return
        if report.passed:
            return
        text = getattr(report, "longreprtext", "") or str(report.longrepr or "")
        if report.skipped:
            message = text
            if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
                message = str(report.longrepr[2])
            if self.outcome == "passed":
                self._set("skipped", message, "pytest.skip", "")
        elif report.when == "call":
            self._set("failed", _first_line(report), "", text)
        else:  # setup or teardown failed: an error, unless the call already failed
            if self.outcome == "failed":
                self.details += "\n\n--- %s error ---\n%s" % (report.when, text)
            else:
                self._set("error", "failed on %s: %s" % (report.when, _first_line(report)), "", text)

    def _set(self, outcome, message, type_, details):
        self.outcome = outcome
        self.message = message
        self.type = type_
        self.details = details

    def message_dict(self):
        return {
            "type": "result",
            "id": self.nodeid,
            "outcome": self.outcome,
            "duration": sum(self.phases.values()),
            "phases": self.phases,
            "message": _clip(self.message),
            "error_type": self.type,
            "details": _clip(self.details),
            "stdout": _clip("".join(self.stdout)),
            "stderr": _clip("".join(self.stderr)),
            "properties": self.properties,
        }


def _group_key(item, name):
    """The key that keeps ``item`` with the other tests of its group: the group marker's first argument
    (``@pytest.mark.NAME("accounts")``), else its keyword arguments, else the marker's presence alone; "" when the
    test does not carry the marker."""
    mark = item.get_closest_marker(name)
    if mark is None:
        return ""
    if mark.args:
        return "%s=%s" % (name, mark.args[0])
    if mark.kwargs:
        return "%s(%s)" % (name, ",".join("%s=%s" % kv for kv in sorted(mark.kwargs.items())))
    return name


def _first_line(report):
    crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return str(crash.message).splitlines()[0] if str(crash.message) else ""
    text = getattr(report, "longreprtext", "") or ""
    lines = [line for line in text.splitlines() if line.startswith("E ")]
    return lines[0][1:].strip() if lines else (text.splitlines()[-1] if text else "")


class TestshardWorker:
    def __init__(self, config, channel):
        self.config = config
        self.channel = channel
        self.results = {}
        self.collect_errors = []

    @pytest.hookimpl
    def pytest_collectreport(self, report):
        if report.failed:
            self.collect_errors.append("%s\n%s" % (report.nodeid, report.longreprtext))

    @pytest.hookimpl
    def pytest_runtest_logstart(self, nodeid, location):
        self.results[nodeid] = _Result(nodeid)
        self.channel.send(type="start", id=nodeid, t=time.time())

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report):
        result = self.results.get(report.nodeid)
        if result is None:
            result = self.results[report.nodeid] = _Result(report.nodeid)
        result.add(report)

    @pytest.hookimpl
    def pytest_runtest_logfinish(self, nodeid, location):
        result = self.results.pop(nodeid, None)
        if result is not None:
            self.channel.send(**result.message_dict())

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        if self.collect_errors or session.testsfailed:
            self.channel.send(type="collect_error", text="\n\n".join(self.collect_errors) or "collection failed")
            return True
        items = {item.nodeid: item for item in session.items}
        self.channel.send(type="ready", count=len(items), pid=os.getpid())
        queue = []
        while True:
            message = self.channel.receive()
            kind = message.get("type")
            if kind == "select":
                self._select(session.items, message.get("markers", ""), message.get("group_marker", ""))
                continue
            if kind == "run":
                for nodeid in message.get("ids", []):
                    item = items.get(nodeid)
                    if item is None:
                        self.channel.send(type="unknown", id=nodeid)
                    else:
                        queue.append(item)
            # Run everything but the last queued test, whose successor is not known yet.
            while len(queue) > 1:
                item = queue.pop(0)
                self._run(session, item, queue[0])
            if kind in ("flush", "stop") and queue:
                self._run(session, queue.pop(0), None)
            if kind == "stop":
                return True

    def _select(self, all_items, markers, group_marker=""):
        def send(items):
            message = {"ids": [item.nodeid for item in items]}
            if group_marker:
                message["groups"] = [_group_key(item, group_marker) for item in items]
            self.channel.send(type="selected", **message)

        if not markers.strip():
            send(all_items)
            return
        if Expression is None:
            self.channel.send(type="select_error", text="this pytest has no _pytest.mark.expression")
            return
        try:
            expr = Expression.compile(markers)
        except Exception as error:  # pytest's ParseError
            self.channel.send(type="select_error", text="Wrong expression passed to '-m': %s: %s" % (markers, error))
            return
        selected = []
        for item in all_items:
            names = {mark.name for mark in item.iter_markers()}
            if expr.evaluate(lambda name, **kwargs: name in names and not kwargs):
                selected.append(item)
        send(selected)

    def _run(self, session, item, nextitem):
        item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
        if session.shouldfail or session.shouldstop:
            # testshard counts maxfail across agents; pytest's own stop flags must not end the worker.
            session.shouldfail = False
            session.shouldstop = False


def pytest_configure(config):
    path = os.environ.get(_SOCKET_ENV)
    if not path or hasattr(config, "workerinput"):  # not under testshard, or inside an xdist worker
        return
    config.pluginmanager.register(TestshardWorker(config, _Channel(path)), "testshard-worker")
