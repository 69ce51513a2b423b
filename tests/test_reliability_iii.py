"""Reliability III: bounded on any file, secrets in every form, a thread ID is not a process.

Each attack is real: FIFOs nobody writes, devices, a sparse 2 GB file, JSON nested 100 000
deep, a program that prints a private key, a multi-threaded target inspected by a thread's ID.
Memory is probed under RLIMIT_AS; nothing is left behind.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys

import pytest

from conftest import DATA, REPO, SHORT_TIMEOUT

MEMORY_LIMIT = 1536 << 20  # address space for one `lab parse`: a few hundred MB of data at most


def limited():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def lab(*args, timeout=SHORT_TIMEOUT * 2, limit=False):
    return subprocess.run([sys.executable, "-m", "lab", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=limited if limit else None)


def one_line(result, status, *words):
    assert result.returncode == status, (result.returncode, result.stderr[-2000:])
    (line,) = result.stderr.splitlines()
    assert line.startswith("lab: error: ") and "Traceback" not in result.stderr
    for word in words:
        assert word in line, line


# -- 1, 2: bounded reads, special files -----------------------------------------------------

@pytest.mark.parametrize("device, kind", [("/dev/zero", "a character device"),
                                          ("/dev/urandom", "a character device")])
def test_parse_refuses_a_device_at_once(device, kind):
    one_line(lab("parse", "auto", device, limit=True), 2, device, kind)


def test_parse_refuses_a_fifo_nobody_writes(tmp_path):
    fifo = tmp_path / "session.txt"
    os.mkfifo(fifo)
    one_line(lab("parse", "auto", str(fifo)), 2, "is a FIFO", "only a regular file")


def test_parse_of_a_sparse_2_gb_file_stays_bounded(tmp_path):
    sparse = tmp_path / "huge.txt"
    with open(sparse, "wb") as handle:
        handle.truncate(2 << 30)
    one_line(lab("parse", "auto", str(sparse), limit=True), 2, "is binary")


def test_a_transcript_of_a_million_frames_is_cut_and_says_so(tmp_path):
    from lab.parsers.document import MAX_FRAMES, MAX_TRANSCRIPT_BYTES

    path = tmp_path / "gdb.txt"
    with open(path, "w") as handle:
        handle.write("(gdb) bt\nThread 1 (Thread 0x7f (LWP 100)):\n")
        for i in range(1_000_000):
            handle.write(f"#{i} 0x00007f0000{i:06x} in work_{i} () from /lib/libwork.so\n")
    result = lab("parse", "gdb", str(path), "--json", timeout=120, limit=True)
    assert result.returncode == 0, result.stderr[-2000:]
    document = json.loads(result.stdout)
    (thread,) = document["debugger"]["threads"]
    assert len(thread["frames"]) == MAX_FRAMES
    read = document["parsed"]["input"]
    assert read["cut"] and read["bytes_read"] == MAX_TRANSCRIPT_BYTES
    assert read["frames_dropped"] > 0
    assert f"read the first {MAX_TRANSCRIPT_BYTES:,} bytes" in result.stderr
    assert "frame(s) dropped" in result.stderr
    assert len(result.stdout) < 4 << 20  # not 251 MB of JSON


@pytest.mark.parametrize("special", ["fifo", "device"])
def test_report_refuses_an_evidence_json_that_is_no_file(tmp_path, special):
    run = tmp_path / "run"
    run.mkdir()
    if special == "fifo":
        os.mkfifo(run / "evidence.json")
    else:
        os.symlink("/dev/zero", run / "evidence.json")
    one_line(lab("report", str(run), limit=True), 2, "only a regular file")


# -- 3: hostile JSON -------------------------------------------------------------------------

def _ips(tmp_path, body: str):
    header = (DATA / "crash-ips-arm64-libdispatch-handbuilt.ips").read_text().split("\n", 1)[0]
    path = tmp_path / "deep.ips"
    path.write_text(header + "\n" + body)
    return path


def test_a_crash_report_nested_100000_deep_is_one_line(tmp_path):
    path = _ips(tmp_path, '{"threads": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    one_line(lab("parse", "auto", str(path)), 2, "nests deeper than")


def test_an_evidence_json_nested_100000_deep_is_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "evidence.json").write_text('{"processes": ' + "[" * 100_000 + "]" * 100_000 + "}")
    one_line(lab("report", str(run)), 2, "nests deeper than")


def test_a_number_out_of_range_never_makes_invalid_json(tmp_path):
    real = (DATA / "crash-ips-arm64-libdispatch-handbuilt.ips").read_text()
    hostile = re.sub(r'"imageOffset"\s*:\s*\d+', '"imageOffset" : 1e999999', real, count=1)
    path = tmp_path / "inf.ips"
    path.write_text(hostile)
    result = lab("parse", "auto", str(path), "--json")
    assert result.returncode == 0, result.stderr

    def refuse(constant):
        raise AssertionError(f"{constant} in the document: not JSON")

    assert json.loads(result.stdout, parse_constant=refuse)["verdict"] == "crash"


# -- 4: secrets in more forms ----------------------------------------------------------------

KEY = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAzBlackBoxSecretKeyMaterial\n"
       "c2VjcmV0LWtleS1saW5lLXR3bw\n-----END RSA PRIVATE KEY-----")
PROGRAM = f"""
import sys
print({KEY!r})
print("db at postgres://app:pw/x9z@db/p and redis://u:p@ss@h:6379/0")
print(" ".join(sys.argv[1:]))
"""


def test_secrets_in_more_forms_are_masked_in_every_file(reaper, tmp_path):
    # GIVEN a program that prints a private key and URLs whose passwords hold / and @, run as
    # curl would be, with -u USER:PASSWORD on its command line
    script = tmp_path / "app.py"
    script.write_text(PROGRAM)
    out = tmp_path / "runs"
    result = reaper.lab("watch", "--debugger", "none", "--out", str(out), "--", sys.executable,
                        str(script), "-u", "admin:hunter2pw", "--proxy-user", "bob:s3cr3tpx")
    assert result.returncode == 0, result.stderr
    (folder,) = out.iterdir()
    assert reaper.lab("report", str(folder)).returncode == 0
    written = {path.name: path.read_text() for path in folder.iterdir() if path.is_file()}
    written["terminal"] = result.stderr
    # THEN no file the lab wrote, nor the terminal, holds any of the secrets
    for name, text in written.items():
        for secret in ("zBlackBoxSecretKeyMaterial", "c2VjcmV0LWtleS1saW5lLXR3bw", "pw/x9z",
                       "p@ss", "hunter2pw", "s3cr3tpx"):
            assert secret not in text, (name, secret)
    assert "-----BEGIN RSA PRIVATE KEY-----" in written["output.txt"]  # the shape is kept
    assert "postgres://app:" in written["output.txt"] and "@db/p" in written["output.txt"]


# -- 5: a thread ID is not a process ---------------------------------------------------------

def test_inspect_of_a_threads_id_inspects_its_process(reaper, tmp_path):
    program = ("import sys, threading\n"
               "t = threading.Thread(target=sys.stdin.read, daemon=True); t.start()\n"
               "print(t.native_id, flush=True); t.join()\n")
    target = reaper.popen([sys.executable, "-c", program], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
    tid = int(target.stdout.readline())
    assert tid != target.pid
    result = reaper.lab("inspect", str(tid), "--debugger", "none", "--out", str(tmp_path),
                        timeout=SHORT_TIMEOUT * 4)
    assert f"TID {tid} is a thread of PID {target.pid}; inspecting PID {target.pid}" in \
        result.stderr
    (folder,) = tmp_path.iterdir()
    evidence = json.loads((folder / "evidence.json").read_text())
    assert evidence["inspect"]["pid"] == target.pid
    assert evidence["processes"][0]["pid"] == target.pid
    assert {t["tid"] for t in evidence["processes"][0]["threads"]} >= {target.pid, tid}
    target.stdin.close()
    target.wait(timeout=SHORT_TIMEOUT)


# -- 6: a path with a newline stays on one line ----------------------------------------------

def test_an_out_path_with_a_newline_is_quoted_on_the_terminal(reaper, tmp_path):
    out = tmp_path / "runs\nsplit"
    result = reaper.lab("watch", "--debugger", "none", "--out", str(out), "--", "true")
    assert result.returncode == 0, result.stderr
    (evidence_line,) = [line for line in result.stderr.splitlines() if "] evidence " in line]
    assert '\\nsplit/' in evidence_line and evidence_line.endswith('evidence.json"')
    assert all(not line.startswith("split") for line in result.stderr.splitlines())
