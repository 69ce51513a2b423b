"""Redaction: what text, argv and environments lose, in linear time; a real run leaks nothing."""

from __future__ import annotations

import os
import sys
import time

import pytest

from lab import redact

MASK = redact.MASK


@pytest.fixture(autouse=True)
def nothing_learned():
    """Learned values are process-wide: each test starts and ends without any."""
    redact.forget()
    yield
    redact.forget()


@pytest.mark.parametrize(("text", "secret"), [
    ("postgres://user:hunter2@db/x", "hunter2"),
    ("curl -H 'Authorization: Bearer abc.def-123' x", "abc.def-123"),
    ("Proxy-Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
    ("authorization=token gho_1234", "gho_1234"),
    ("sent with bearer eyJhbGciOi.x.y", "eyJhbGciOi.x.y"),
    ("login ok, password=hunter22 accepted", "hunter22"),
    ('{"password": "s3cr3t!", "user": "me"}', "s3cr3t!"),
    ("DB_PASS=dbpw123 MYSQL_PWD=mypw456", "dbpw123"),
    ("DB_PASS=dbpw123 MYSQL_PWD=mypw456", "mypw456"),
    ("SLACK_WEBHOOK_URL=https://hooks.slack.com/services/T0/B0/xyz", "hooks.slack.com"),
    ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG", "wJalrXUtnFEMI"),
    ("client_secret: abcdef", "abcdef"),
    ("run --db-pass=hunter22 now", "hunter22"),
    ("key sk-planted0123456789abcdef here", "sk-planted"),
    ("id AKIAABCDEFGHIJKLMNOP.", "AKIAABCDEFGHIJKLMNOP"),
    ("ghp_" + "a" * 36, "ghp_"),
], ids=lambda value: value if len(value) < 40 else value[:37] + "...")
def test_secrets_in_text_are_masked(text, secret):
    # GIVEN a line with a secret WHEN it is redacted THEN the secret is gone, a mask is there
    redacted = redact.text(text)
    assert secret not in redacted and MASK in redacted


@pytest.mark.parametrize("text", [
    "3 passed, 1 failed in 0.35 s",
    "tokens: 512, tokenizer ready",
    "TOKENIZERS_PARALLELISM=false",
    "see https://example.com/a:b and user@host",
    "2024-01-01 12:00:00 INFO worker[1234]: processed batch 17 of 200",
    "",
])
def test_harmless_text_stays_as_it_is(text):
    # GIVEN text without a secret WHEN it is redacted THEN it is unchanged
    assert redact.text(text) == text


@pytest.mark.parametrize(("args", "want"), [
    (["prog", "--db-pass=hunter22"], ["prog", f"--db-pass={MASK}"]),
    (["prog", "--db-pass", "hunter22", "x"], ["prog", "--db-pass", MASK, "x"]),
    (["prog", "--api-key=k", "--token", "t"], ["prog", f"--api-key={MASK}", "--token", MASK]),
    (["env", "DB_PASS=pw", "prog"], ["env", f"DB_PASS={MASK}", "prog"]),
    (["mysql", "-uroot", "-phunter22", "db"], ["mysql", "-uroot", f"-p{MASK}", "db"]),
    (["gdb", "-p", "1234", "-p1234"], ["gdb", "-p", "1234", "-p1234"]),
    (["curl", "-H", "Authorization: Bearer tok123"],
     ["curl", "-H", f"Authorization: Bearer {MASK}"]),
    (["curl", "-H", "Authorization:", "Bearer", "tok123"],
     ["curl", "-H", "Authorization:", "Bearer", MASK]),
    (["http", "Authorization:", "tok123"], ["http", "Authorization:", MASK]),
    (["python", "-c", 'print("password=pw1234")'], ["python", "-c", f'print("password={MASK}")']),
], ids=["--x-pass=V", "--x-pass V", "--api-key and --token", "NAME=V", "mysql -pV",
        "gdb -p pid", "header in one", "header in three", "header in two", "code"])
def test_argv_masks_secret_values(args, want):
    # GIVEN a command line WHEN it is redacted THEN exactly the secret values are masked
    assert redact.argv(args) == want


def test_argv_learns_what_it_masks():
    # GIVEN a command line with a flag value WHEN it is redacted
    redact.argv(["prog", "--db-pass", "hunter23"])
    # THEN the program printing its own command line prints the value masked
    assert redact.text("args: --db-pass hunter23") == f"args: --db-pass {MASK}"


def test_environment_masks_secret_names_and_keeps_harmless_ones(tmp_path):
    # GIVEN an environment with secrets under many names, and names that only look secret
    env = {"DB_PASS": "dbpass-secret-1", "MYSQL_PWD": "mysql-secret-2", "MY_SECRET": "s3cr3t-3",
           "SLACK_WEBHOOK_URL": "https://hooks.slack.com/x", "GITHUB_TOKEN": "gh-token-55",
           "AWS_SECRET_ACCESS_KEY": "aws/secret+4", "GCP_CREDENTIALS": "creds-66",
           "HTTP_AUTH": "auth-77x", "PWD": "/work", "OLDPWD": "/tmp",
           "TOKENIZERS_PARALLELISM": "false", "HOME": "/root",
           "DATABASE_URL": "postgres://u:dbpass-secret-1@db/x"}
    # WHEN it is redacted
    masked = redact.environment(env)
    # THEN every secret name is masked; the shell's directories and the fork switch are kept
    assert {k for k, v in masked.items() if v == MASK} == {
        "DB_PASS", "MYSQL_PWD", "MY_SECRET", "SLACK_WEBHOOK_URL", "GITHUB_TOKEN",
        "AWS_SECRET_ACCESS_KEY", "GCP_CREDENTIALS", "HTTP_AUTH"}
    assert masked["PWD"] == "/work" and masked["TOKENIZERS_PARALLELISM"] == "false"
    assert "dbpass-secret-1" not in masked["DATABASE_URL"]


def test_learned_values_are_masked_in_any_later_text(tmp_path):
    # GIVEN secret variables: one long value, one short, one the path of an existing file
    helper = tmp_path / "askpass"
    helper.write_text("")
    redact.learn({"AWS_SECRET_ACCESS_KEY": "wJalr/K7MDENG+bPx", "API_KEY": "abc",
                  "GIT_ASKPASS": str(helper), "PLAIN": "not-a-secret-value"})
    # WHEN text printed later holds them
    redacted = redact.text(f"key wJalr/K7MDENG+bPx, WJALR/k7mdeng+BPX, abc, {helper}, "
                           "not-a-secret-value")
    # THEN the learned value is masked, in any case; too short a value, a path and the value
    # of a harmless name are not
    assert redacted == f"key {MASK}, {MASK}, abc, {helper}, not-a-secret-value"


def test_many_learned_values_keep_redaction_linear(measure):
    # GIVEN as many values as are remembered, sharing long prefixes, and one more after them
    values = {f"SECRET_{i}": f"shared-prefix-{i:05d}-{'x' * (i % 40)}"
              for i in range(redact.MAX_LEARNED)}
    redact.learn(values)
    redact.learn({"ONE_MORE_TOKEN": "one-more-value"})
    line = ("a.b-" * 2_500_000) + " shared-prefix-00000- " + values["SECRET_255"]
    # WHEN a 10 MB line is redacted
    started = time.monotonic()
    redacted = redact.text(line)
    seconds = time.monotonic() - started
    measure(f"redact.text, 10 MB, {redact.MAX_LEARNED} learned values", seconds)
    # THEN it takes seconds at most, every remembered value is masked, the one past the cap not
    assert seconds < 10.0 and redacted.endswith(f" {MASK} {MASK}")
    assert redact.text("one-more-value") == "one-more-value"


@pytest.mark.parametrize("unit", ["abc.def1.", "a", "pass", "password=", ":", "://a:",
                                  "authorization: bearer ", "_key", "sk-"],
                         ids=lambda unit: f"{unit!r}")
def test_a_10_mb_line_redacts_in_linear_time(unit, measure):
    # GIVEN a 10 MB line of one repeated unit (letters and dots made the URL rule quadratic:
    # 100 KB took 5 s)
    line = unit * (10_000_000 // len(unit))
    # WHEN it is redacted THEN it takes well under a few seconds
    started = time.monotonic()
    redact.text(line)
    seconds = time.monotonic() - started
    measure(f"redact.text, 10 MB of {unit!r}", seconds)
    assert seconds < 5.0


@pytest.mark.parametrize("secret", [
    "password=hunter22", "postgres://user:hunter22@db", "Authorization: Bearer hunter22",
    "learned hunter22-learned",
], ids=["assignment", "url", "header", "learned"])
@pytest.mark.parametrize("offset", [-9, -1, 0, redact.CHUNK - 5])
def test_a_secret_across_a_chunk_boundary_is_masked(secret, offset):
    # GIVEN text longer than one window, with the secret straddling (or starting at) the end
    # of the first chunk or, for the last offset, of the second
    redact.learn({"MY_TOKEN": "hunter22-learned"})
    start = redact.CHUNK + offset
    text = "x" * start + " " + secret + " " + "y" * (2 * redact.CHUNK)
    # WHEN it is redacted
    redacted = redact.text(text)
    # THEN the value is masked as in a short text, and everything around it is intact
    assert "hunter22" not in redacted
    assert redacted == "x" * start + " " + redact.text(secret) + " " + "y" * (2 * redact.CHUNK)


def test_a_real_run_writes_no_secret_anywhere(reaper, tmp_path):
    # GIVEN secrets in the environment, on the command line, and printed by the program
    env = {**os.environ, "DB_PASS": "dbpass-secret-1", "MYSQL_PWD": "mysql-secret-2",
           "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/webhooksecret3",
           "AWS_SECRET_ACCESS_KEY": "aws-secret-4/abc+def"}
    program = ("import os, sys\n"
               "print('Authorization: Bearer hdr-secret-5')\n"
               "print('password=pw-secret-6')\n"
               "print(os.environ['AWS_SECRET_ACCESS_KEY'])\n"
               "print(' '.join(sys.argv[1:]))\n")
    secrets = ["dbpass-secret-1", "mysql-secret-2", "webhooksecret3", "aws-secret-4",
               "hdr-secret-5", "pw-secret-6", "hunter22", "hunter23", "argv-bearer-9"]
    # WHEN the lab watches it, then writes its bug report
    result = reaper.lab("watch", "--json", "--quiet", "--out", str(tmp_path), "--",
                        sys.executable, "-c", program, "--db-pass=hunter22", "--db-pass",
                        "hunter23", "Authorization: Bearer argv-bearer-9", env=env)
    assert result.returncode == 0, result.stderr
    (run_dir,) = [path for path in tmp_path.iterdir() if path.is_dir()]
    report = reaper.lab("report", str(run_dir), env=env)
    assert report.returncode == 0, report.stderr
    # THEN no file the run wrote (evidence.json, summary.md, output.txt, report.md), nor the
    # lab's own output, holds any secret value
    written = {path.name: path.read_text(errors="replace") for path in run_dir.rglob("*")
               if path.is_file() and not path.name.startswith("core")}
    assert {"evidence.json", "summary.md", "output.txt", "report.md"} <= set(written)
    written["stdout"], written["stderr"] = result.stdout, result.stderr
    leaks = [(secret, name) for secret in secrets for name, text in written.items()
             if secret in text]
    assert not leaks
    # AND the program's output is still there, masked where it held secrets
    assert f"password={MASK}" in written["output.txt"]


def test_a_json_key_that_mentions_pass_keeps_its_object_value():
    # GIVEN JSON whose key contains "pass" and whose value is an object (the bench's results)
    text = '{"python -c pass": {"n": 5}, "db_pass": "hunter22"}'
    # THEN the object stays valid JSON; the string value of a secret key is still masked
    masked = redact.text(text)
    assert masked.startswith('{"python -c pass": {"n": 5}')
    assert "hunter22" not in masked
