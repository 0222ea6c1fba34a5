#!/usr/bin/env python3
"""Replays every command block of README.md, in order, against a real
Gatehouse, and fails when an output differs from what the README shows.

Usage: replay.py GATEHOUSE_BINARY            (see tests/readme/README.md)

Before it replays anything it checks that the README and docs stand alone:
no reference to ../shared/ (not part of the published repository), and
every relative link leads to a file that exists.

What counts as a command block:
  - a ```sh or ```text block with lines starting with "$ ": each such line
    (plus lines it continues with a trailing backslash) is a command, and
    the lines after it, up to the next "$ ", are its expected output;
  - a ```text block without "$ " continues the expected output of the
    previous command (the README shows one program's output in two parts);
  - a ```sh block without "$ " is a script: it runs, its output is not
    shown, and it must succeed.
Other blocks (TOML, JSON, the layout) are not run.

How outputs are compared:
  - JSON (the expected output starts with "{" or "["): field by field; the
    answer may hold more fields than shown only where the README writes
    ", ..."; inside a string "..." matches any text.
  - Text: line by line, runs of spaces counting as one; "..." matches any
    text inside a line, and a line that is only "..." any number of lines.
  - Values the server makes up are learned from the first output that shows
    them and replaced in every later command and output: 12-character key
    ids (letters and digits, as 7hq2c0k1m3xv), client ids (ghc_ and 16),
    signing key ids (43 characters), 20-character passwords, and
    every word with "..." in it (ghk_..., eyJ..., apr_...). Timestamps match
    any timestamp. "127.0.0.1:8787" is the address the server really got.
  - A command must succeed unless the README shows it failing (its output
    starts with "deny:", "approval:" or "error:").

Where the replay stands in for a person (and only there):
  - the README's opening block (serve, and scripts/test, which runs this
    replay) is skipped: serve comes again as the walkthrough's step 1;
  - `cargo run -- serve` starts the built binary in the background, on a
    free port that a configuration file (GATEHOUSE_CONFIG, read by the CLI
    too) names instead of 127.0.0.1:8787; its first lines are compared
    with the README's;
  - `alias gatehouse='cargo run -q --'` is skipped: `gatehouse` on the
    PATH runs the built binary (the same program, without cargo's start-up
    time);
  - a command with --follow runs for two seconds;
  - the person's click on an approval page is `gatehouse approvals approve`
    on the last approval id shown, when the README first uses an operation
    token (gho_...) that no output has shown;
  - `python3 -m venv .venv` is skipped when the Python interop test has
    made the same environment (.tools/pyvenv, linked as .venv);
  - the browser that examples/python_oauth_client.py opens is
    tests/interop/python/login_browser.py, signing in as the user the
    README added last, with the password its output showed.
"""

import json
import os
import pty
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = os.path.join(ROOT, "README.md")
README_ADDRESS = "127.0.0.1:8787"

# Values the server makes up: (kind, where one stands in the README, what
# the server's looks like).
VARIABLES = [
    ("client", r"(?<![A-Za-z0-9_])ghc_[a-z0-9]{16}(?![A-Za-z0-9])", r"ghc_[a-z0-9]{16}"),
    ("kid", r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])", r"[A-Za-z0-9_-]{43}"),
    ("id", r"(?<![A-Za-z0-9])[a-z0-9]{12}(?![A-Za-z0-9])", r"[a-z0-9]{12}"),
    ("password", r"(?<![A-Za-z0-9])[A-Za-z0-9]{20}(?![A-Za-z0-9])", r"[A-Za-z0-9]{20}"),
]
# A word of letters and digits ending in "..." (a secret: dh67HafK...)
# stands for any word.
SECRET_WORD = r"(?<!\S)[A-Za-z0-9]+\.\.\.(?!\S)"
TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z"
FAILING_OUTPUT = ("deny:", "approval:", "error:")


class ReplayError(Exception):
    pass


# --- the README, as steps ---------------------------------------------------


class Step:
    def __init__(self, kind, text, line):
        self.kind = kind  # "command" or "script"
        self.text = text
        self.line = line
        self.expected = []


def parse(text):
    steps = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        lang, start = fence.group(1), i + 1
        end = start
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        block = lines[start:end]
        i = end + 1
        if lang not in ("sh", "text"):
            continue
        if not any(l.startswith("$ ") for l in block):
            if lang == "sh":
                steps.append(Step("script", "\n".join(block), start + 1))
            elif steps and steps[-1].kind == "command":
                steps[-1].expected += block
            continue
        current = None
        j = 0
        while j < len(block):
            line = block[j]
            if line.startswith("$ "):
                command, first = line[2:], start + j + 1
                while command.endswith("\\") and j + 1 < len(block):
                    j += 1
                    command += "\n" + block[j]
                current = Step("command", command, first)
                steps.append(current)
            elif current is not None:
                current.expected.append(line)
            j += 1
    for step in steps:
        while step.expected and not step.expected[-1].strip():
            step.expected.pop()
    return steps


# --- values learned from outputs --------------------------------------------


class Bindings:
    """README literal -> the value the server really produced."""

    def __init__(self):
        self.values = {}

    def bind(self, literal, actual):
        self.values[literal] = actual

    def apply(self, text, outputs=False):
        """Replaces what was learned. In an expected output, a word with
        "..." stands for a new value (only ids and passwords must repeat)."""
        # Longest first, so "ghk_4k2m9x0q7rbt_..." wins over "4k2m9x0q7rbt".
        for literal in sorted(self.values, key=len, reverse=True):
            if outputs and "..." in literal:
                continue
            text = text.replace(literal, self.values[literal])
        return text


def is_variable(word, kind):
    if kind == "client":
        return True
    if kind == "kid":
        return all(re.search(p, word) for p in (r"\d", r"[a-z]", r"[A-Z]"))
    if kind == "id":
        return bool(re.search(r"\d", word)) and bool(re.search(r"[a-z]", word))
    return all(re.search(p, word) for p in (r"\d", r"[a-z]", r"[A-Z]"))


def pattern_for(expected, bindings, groups):
    """A regex for one expected line (or string). Unbound variables and
    words with "..." become named groups; `groups` maps names to literals."""
    expected = bindings.apply(expected, outputs=True)
    variables = []
    for kind, regex, shape in VARIABLES:
        for m in re.finditer(regex, expected):
            if is_variable(m.group(0), kind) and m.group(0) not in bindings.values:
                variables.append((m.start(), m.end(), shape))
    out = []
    position = 0
    seen = {}

    def literal(text):
        # "..." and timestamps inside literal text
        pieces = re.split("(" + SECRET_WORD + r"|\.\.\.|" + TIMESTAMP + ")", text)
        result = []
        for piece in pieces:
            if piece and re.fullmatch(SECRET_WORD, piece):
                result.append(r"\S+")
            elif piece == "...":
                result.append(".*?")
            elif piece and re.fullmatch(TIMESTAMP, piece):
                result.append(TIMESTAMP)
            else:
                result.append(re.escape(piece))
        return "".join(result)

    for start, end, shape in sorted(variables):
        if start < position:
            continue
        out.append(literal(expected[position:start]))
        word = expected[start:end]
        if word in seen:
            out.append("(?P=%s)" % seen[word])
        else:
            name = "v%d" % len(groups)
            groups[name] = word
            seen[word] = name
            out.append("(?P<%s>%s)" % (name, shape))
        position = end
    out.append(literal(expected[position:]))
    return "".join(out)


def words_with_ellipsis(expected, actual, bindings):
    """Binds every word of `expected` holding "..." to the word of `actual`
    at the same place (after a successful match of the whole text)."""
    exp_words, act_words = expected.split(), actual.split()
    if len(exp_words) != len(act_words):
        return
    for e, a in zip(exp_words, act_words):
        if "..." in e and e != "...":
            bindings.bind(e.strip("'\""), a.strip("'\""))


def normalize(line):
    return " ".join(line.split())


def match_text(expected_lines, actual, bindings, prefix=False):
    """Returns None when `actual` matches, else why not."""
    groups = {}
    parts = []
    for line in expected_lines:
        line = normalize(line)
        parts.append(None if line == "..." else pattern_for(line, bindings, groups))
    regex = ""
    for k, part in enumerate(parts):
        if part is None:
            # Any number of whole lines, none included.
            regex += r"(?:[^\n]*\n)*?" if k == 0 else r"(?:\n[^\n]*)*?"
            continue
        if k > 0 and not (k == 1 and parts[0] is None):
            regex += "\n"
        regex += part
    if prefix:
        regex += r"(?:\n[^\n]*)*"
    actual_lines = [normalize(l) for l in actual.strip("\n").split("\n")]
    m = re.fullmatch(regex, "\n".join(actual_lines))
    if not m:
        return "the output differs"
    for name, literal in groups.items():
        bindings.bind(literal, m.group(name))
    # Words with "..." (ghk_..., eyJ...): bound to the word at the same place
    # of the line they matched, as the README spells them.
    for line in expected_lines:
        line = normalize(line)
        if "..." not in line or line == "...":
            continue
        regex_line = pattern_for(line, bindings, {})
        for got in actual_lines:
            if re.fullmatch(regex_line, got):
                words_with_ellipsis(line, got, bindings)
                break
    return None


def json_template(text):
    # ", ..." standing for more fields is not JSON: drop it, and remember
    # which objects allow more fields by a marker key.
    marked = re.sub(r",\s*\.\.\.\s*(?=})", ', "\u2026": true', text)
    marked = re.sub(r",\s*\.\.\.\s*(?=])", "", marked)
    return json.loads(marked)


def match_json(want, got, bindings, path="answer"):
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return ["%s: README shows an object, the server sent %s" % (path, json.dumps(got))]
        errors = []
        more = want.get("\u2026") is True
        for key, value in want.items():
            if key == "\u2026":
                continue
            if key not in got:
                errors.append("%s.%s: shown in the README, missing in the answer" % (path, key))
            else:
                errors += match_json(value, got[key], bindings, path + "." + key)
        if not more:
            for key in got:
                if key not in want:
                    errors.append("%s.%s: in the answer, not shown in the README (add it or ', ...')" % (path, key))
        return errors
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return ["%s: README shows %s, the server sent %s" % (path, json.dumps(want), json.dumps(got))]
        return [e for k, (w, g) in enumerate(zip(want, got)) for e in match_json(w, g, bindings, "%s[%d]" % (path, k))]
    if isinstance(want, str) and isinstance(got, str):
        groups = {}
        regex = pattern_for(want, bindings, groups)
        m = re.fullmatch(regex, got, re.S)
        if m:
            for name, literal in groups.items():
                bindings.bind(literal, m.group(name))
            if "..." in want:
                bindings.bind(want, got)
            return []
    elif want == got and type(want) == type(got):
        return []
    return ["%s: README shows %s, the server sent %s" % (path, json.dumps(want), json.dumps(got))]


def compare(step, actual, bindings, address):
    expected = [l.replace(README_ADDRESS, address) for l in step.expected]
    if not expected:
        return None
    first = expected[0].lstrip()
    if first.startswith("{") or first.startswith("["):
        try:
            want = json_template(" ".join(l.strip() for l in expected))
        except ValueError as e:
            return "the README's JSON does not parse: %s" % e
        try:
            got = json.loads(actual)
        except ValueError:
            return "the server's answer is not JSON"
        errors = match_json(want, got, bindings)
        return "\n  ".join(errors) if errors else None
    return match_text(expected, actual, bindings)


# --- running ---------------------------------------------------------------


class Shell:
    """One bash for the whole README, so variables and functions carry over."""

    def __init__(self, cwd, env):
        self.dir = tempfile.mkdtemp(prefix="readme-shell-")
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.count = 0

    def run(self, text, extra_env=None, timeout=120):
        self.count += 1
        out = os.path.join(self.dir, "out%d" % self.count)
        marker = "__readme_done_%d__" % self.count
        prefix = "".join("%s=%s " % (k, shlex.quote(v)) for k, v in (extra_env or {}).items())
        if prefix:
            text = "export %s\n%s" % (prefix.strip(), text)
        script = "{ %s\n} >%s 2>&1 </dev/null\necho %s $?\n" % (text, shlex.quote(out), marker)
        self.proc.stdin.write(script)
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise ReplayError("the shell exited")
            if line.startswith(marker):
                status = int(line.split()[1])
                break
            if time.monotonic() > deadline:
                raise ReplayError("timed out")
        with open(out, encoding="utf-8", errors="replace") as f:
            output = f.read().replace("\r", "")
        return status, output

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def copy_terminal(master, path):
    """Appends what the server writes to its terminal to `path`, without
    the terminal's carriage returns, until the server closes it."""
    with open(path, "w", encoding="utf-8") as out:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the server closed its end
                break
            if not data:
                break
            out.write(data.decode("utf-8", "replace").replace("\r\n", "\n"))
            out.flush()
    os.close(master)


def start_server(binary, step, env, workdir, bindings):
    out = os.path.join(workdir, "serve.out")
    err = os.path.join(workdir, "serve.err")
    # The README's reader starts the server in a terminal, where it prints
    # the first start's key (to output that is not one, it prints no secret).
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [binary, "serve"],
        env=env,
        stdout=slave,
        stderr=open(err, "w"),
        stdin=subprocess.DEVNULL,
    )
    os.close(slave)
    open(out, "w").close()
    threading.Thread(target=copy_terminal, args=(master, out), daemon=True).start()
    deadline = time.monotonic() + 30
    address = None
    why = "the server printed nothing"
    while time.monotonic() < deadline:
        time.sleep(0.1)
        text = open(out, encoding="utf-8").read()
        m = re.search(r"http://(127\.0\.0\.1:\d+)/mcp", text)
        if not m:
            continue
        address = m.group(1)
        expected = [l.replace(README_ADDRESS, address) for l in step.expected]
        why = match_text(expected, text, bindings, prefix=True)
        if why is None:
            return proc, address, text
        if proc.poll() is not None:
            break
    proc.kill()
    raise ReplayError("`%s`: %s\n%s\n%s" % (step.text, why, open(out).read(), open(err).read()))


def documents():
    """The documents a user of the published repository reads."""
    paths = [README, os.path.join(ROOT, "bench", "README.md")]
    for folder in ("docs", "examples", os.path.join("tests", "readme"), os.path.join("tests", "browser")):
        base = os.path.join(ROOT, folder)
        paths += [os.path.join(base, n) for n in sorted(os.listdir(base)) if not n.startswith(".")]
    this = os.path.abspath(__file__)
    return [p for p in paths if os.path.isfile(p) and os.path.abspath(p) != this]


def check_documents_stand_alone():
    """The README and docs must not send a reader to files outside the
    repository, and their relative links must lead somewhere."""
    problems = []
    for path in documents():
        text = open(path, encoding="utf-8").read()
        name = os.path.relpath(path, ROOT)
        if "../shared/" in text:
            problems.append("%s names ../shared/, which is not part of the repository" % name)
        if path.endswith(".md"):
            for target in re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", text):
                if re.match(r"^[a-z]+:", target):
                    continue
                if not os.path.exists(os.path.join(os.path.dirname(path), target)):
                    problems.append("%s links to %s, which does not exist" % (name, target))
    return problems


def main(binary):
    problems = check_documents_stand_alone()
    if problems:
        print("README replay FAILED: the documents do not stand alone:", file=sys.stderr)
        for problem in problems:
            print("  " + problem, file=sys.stderr)
        return 1
    steps = parse(open(README, encoding="utf-8").read())
    workdir = tempfile.mkdtemp(prefix="readme-replay-")
    data = os.path.join(workdir, "data")
    cwd = os.path.join(workdir, "cwd")
    os.makedirs(cwd)
    # The README's relative paths: examples/ and a .venv made as it says.
    os.symlink(os.path.join(ROOT, "examples"), os.path.join(cwd, "examples"))
    # The README makes a .venv with the pinned MCP SDK; the Python interop
    # test has made the same one already, which saves the download.
    pyvenv = os.path.join(ROOT, ".tools", "pyvenv")
    if os.path.isdir(pyvenv):
        os.symlink(pyvenv, os.path.join(cwd, ".venv"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    # The server and the CLI agree on the address through the configuration,
    # as they do for a user on the default 127.0.0.1:8787; here it is a free port.
    config = os.path.join(workdir, "gatehouse.toml")
    with open(config, "w") as f:
        f.write('version = 1\n[server]\nlisten = "127.0.0.1:%d"\n' % free_port())
    env.update(
        GATEHOUSE_CONFIG=config,
        GATEHOUSE_DATA_DIR=data,
        XDG_CONFIG_HOME=os.path.join(workdir, "config"),
        OPTOKEN="",
        NO_COLOR="1",
    )
    # `gatehouse` on the PATH is the built binary (the README's alias runs
    # the same program through cargo).
    bindir = os.path.join(workdir, "bin")
    os.makedirs(bindir)
    with open(os.path.join(bindir, "gatehouse"), "w") as f:
        f.write('#!/bin/sh\nexec %s "$@"\n' % shlex.quote(binary))
    os.chmod(os.path.join(bindir, "gatehouse"), 0o755)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    shell = Shell(cwd, env)
    bindings = Bindings()
    server = None
    address = README_ADDRESS
    last_user = None
    compared = commands = 0
    try:
        for step in steps:
            where = "README.md line %d" % step.line
            text = step.text
            if step.kind == "script" and "scripts/test" in text:
                # The opening two commands: `serve` comes again as step 1 of
                # the walkthrough, and scripts/test is what runs this replay.
                continue
            if step.kind == "command" and text.strip().startswith("cargo run -- serve"):
                server, address, _ = start_server(binary, step, env, workdir, bindings)
                commands += 1
                compared += 1
                continue
            text = "\n".join(
                l for l in text.split("\n") if not l.strip().startswith("alias gatehouse=")
            )
            text = bindings.apply(text.replace(README_ADDRESS, address))
            extra = {}
            if text.startswith("python3 -m venv .venv && ") and os.path.islink(os.path.join(cwd, ".venv")):
                text = text[len("python3 -m venv .venv && "):]
            if "gho_..." in text:
                approval = bindings.values.get("apr_...")
                if not approval:
                    raise ReplayError("%s: an operation token is used before any approval id was shown" % where)
                status, out = shell.run("gatehouse approvals approve %s --json" % shlex.quote(approval))
                if status != 0:
                    raise ReplayError("%s: approving %s failed:\n%s" % (where, approval, out))
                bindings.bind("gho_...", json.loads(out)["operation_token"])
                text = bindings.apply(text)
            if "python_oauth_client.py" in text:
                if not last_user:
                    raise ReplayError("%s: the example needs a user added earlier in the README" % where)
                extra = {
                    "BROWSER": "%s %s %%s"
                    % (os.path.join(cwd, ".venv/bin/python"),
                       os.path.join(ROOT, "tests/interop/python/login_browser.py")),
                    "PYTHONPATH": os.path.join(ROOT, "tests/interop/python"),
                    "GATEHOUSE_TEST_USER": last_user[0],
                    "GATEHOUSE_TEST_PASSWORD": last_user[1],
                }
            timeout = 300
            if "--follow" in text:
                text = "timeout 2 " + text
            status, out = shell.run(text, extra, timeout=timeout)
            commands += 1
            if step.kind == "script":
                if status != 0:
                    raise ReplayError("%s: the script failed (exit %d):\n%s\n--- output:\n%s" % (where, status, text, out))
                continue
            shown_failing = step.expected and step.expected[0].lstrip().startswith(FAILING_OUTPUT)
            following = text.startswith("timeout 2 ") and status == 124
            if status != 0 and not shown_failing and not following:
                raise ReplayError("%s: `%s` failed (exit %d):\n%s" % (where, step.text, status, out))
            if status == 0 and shown_failing and not text.lstrip().startswith("curl"):
                raise ReplayError("%s: `%s` succeeded, the README shows it failing:\n%s" % (where, step.text, out))
            why = compare(step, out, bindings, address)
            if why:
                raise ReplayError(
                    "%s: `%s`: %s\n--- README shows:\n%s\n--- the server printed:\n%s"
                    % (where, step.text, why, "\n".join(step.expected), out)
                )
            if step.expected:
                compared += 1
            added = re.match(r"\s*gatehouse users add (\S+)", step.text)
            if added:
                password = re.search(r"password: (\S+)", out)
                if password:
                    last_user = (added.group(1), password.group(1))
    except ReplayError as e:
        print("README replay FAILED at %s" % e, file=sys.stderr)
        if server:
            print("--- server log (last 30 lines):", file=sys.stderr)
            print("\n".join(open(os.path.join(workdir, "serve.err")).read().splitlines()[-30:]), file=sys.stderr)
        return 1
    finally:
        if server:
            server.terminate()
            server.wait(timeout=10)
        shell.close()
    print("README replay: %d commands run, %d outputs compared with the README" % (commands, compared))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
