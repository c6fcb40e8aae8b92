"""The HTCondor example (ops/htcondor): the submit file read by HTCondor's own
Python bindings, its retry policy evaluated as a ClassAd, the DAG snippet's
nodes, and the very command the submit file declares run against the Apache
deployment with a robot keytab, for each exit code the policy relies on.

HTCondor itself (condor_submit, a schedd) is not installed here; the bindings
parse submit descriptions and evaluate ClassAd expressions without a pool.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import classad2
import htcondor2
import pytest

from support.condor import (
    SUBMIT_FILE,
    condor_environment,
    read_dag,
    split_condor_words,
)
from support.deployment import Deployment, apache_available, deployed
from support.kerberos import Realm
from support.live import tool

#: What the example stands for, replaced by the test deployment's values.
EXAMPLE_SERVER = "https://dqrxfer.example.org"
EXAMPLE_KEYTAB = "/home/dqr/.keytab/dqr.robot.keytab"
EXAMPLE_CACHE_DIR = "/home/dqr/.cache/dqrxfer"
#: dqr-upload's exit codes (docs/users/exit-codes.md).
DONE, USAGE, AUTHENTICATION, REFUSED, GAVE_UP = 0, 2, 3, 4, 5


def submit_description() -> htcondor2.Submit:
    return htcondor2.Submit(SUBMIT_FILE.read_text())


def upload_node_variables() -> dict[str, str]:
    return read_dag()["upload"].variables


# -- the files as HTCondor reads them ---------------------------------------------


def test_the_submit_file_parses_and_declares_one_vanilla_job_without_transfers() -> None:
    submit = submit_description()
    assert submit["universe"] == "vanilla"
    assert submit["should_transfer_files"].upper() == "NO"
    # The job sees only the environment it declares: no ticket cache or
    # KRB5CCNAME of the submitting shell leaks in.
    assert submit["getenv"].lower() == "false"
    assert submit.getQArgs() == ""  # a plain `queue`: one job per node
    assert Path(submit["executable"]).name == "dqr-upload"


def test_the_dag_passes_every_variable_the_submit_file_uses() -> None:
    nodes = read_dag()
    upload = nodes["upload"]
    assert upload.submit_file == SUBMIT_FILE.name
    # The upload runs after the node(s) that write the report.
    assert upload.parents == {"tier1"}
    # Retries are the submit file's (exit code 5 only): a DAGMan RETRY would
    # also re-run refusals, which fail the same way every time.
    assert upload.retry is None
    submit = submit_description()
    for name, value in upload.variables.items():
        submit[name] = value
    for key in ("executable", "arguments", "environment", "output", "error", "log"):
        expanded = submit.expand(key)
        assert "$(" not in expanded, f"{key}: a variable the DAG does not set: {expanded}"
    arguments = split_condor_words(submit.expand("arguments"))
    variables = upload.variables
    assert arguments[-1] == variables["reportdir"]
    for option, value in (
        ("--project", variables["project"]),
        ("--graceid", variables["graceid"]),
        ("--uploader", variables["site"]),
        ("--revision", variables["revision"]),
    ):
        assert arguments[arguments.index(option) + 1] == value
    # The report directory the DAG names is the report it uploads.
    graceid, site, revision = variables["graceid"], variables["site"], variables["revision"]
    assert Path(variables["reportdir"]).name == f"{graceid}_{site}_{revision}"
    assert Path(variables["reportdir"]).parent.name == f"{graceid}_dir"


def test_a_report_directory_with_spaces_stays_one_argument() -> None:
    submit = submit_description()
    for name, value in upload_node_variables().items():
        submit[name] = value
    submit["reportdir"] = "/home/dqr/public html/S230518h_dir/S230518h_llo_1"
    arguments = split_condor_words(submit.expand("arguments"))
    assert arguments[-1] == "/home/dqr/public html/S230518h_dir/S230518h_llo_1"


def on_exit_remove(submit: htcondor2.Submit) -> classad2.ExprTree:
    """The job's OnExitRemove as condor_submit builds it from max_retries,
    success_exit_code and retry_until (condor_submit's manual: the retry
    commands generate OnExitRemove; an integer retry_until N stands for
    ``ExitCode is N``, an expression is taken as it is).  The job leaves the
    queue when this is true; otherwise it goes back to idle and runs again."""
    until = submit["retry_until"].strip()
    if until.lstrip("-").isdigit():
        until = f"ExitCode is {until}"
    success = submit.get("success_exit_code", "0").strip()
    return classad2.ExprTree(
        f"NumJobCompletions > JobMaxRetries || ExitCode is {success} || ({until})"
    )


def runs(submit: htcondor2.Submit, exit_code: int) -> int:
    """How many times HTCondor runs the job when every run exits with ``exit_code``."""
    policy = on_exit_remove(submit)
    completions = 0
    while True:
        completions += 1  # the shadow counts the run before it evaluates the policy
        job = classad2.ClassAd(
            {
                "ExitCode": exit_code,
                "ExitBySignal": False,
                "NumJobCompletions": completions,
                "JobMaxRetries": int(submit["max_retries"]),
            }
        )
        if policy.eval(job) is True:
            return completions
        assert completions < 100, "the policy never lets the job leave the queue"


def test_the_retry_policy_reruns_exit_code_5_only() -> None:
    submit = submit_description()
    max_retries = int(submit["max_retries"])
    assert max_retries == 4
    # retry_until as a ClassAd expression: true stops the retries.
    until = classad2.ExprTree(submit["retry_until"])
    stops = {code: until.eval(classad2.ClassAd({"ExitCode": code})) for code in range(7)}
    assert stops == {0: True, 1: True, 2: True, 3: True, 4: True, 5: False, 6: True}
    assert runs(submit, DONE) == 1
    for code in (USAGE, AUTHENTICATION, REFUSED):
        assert runs(submit, code) == 1, f"exit code {code} must not be retried"
    assert runs(submit, GAVE_UP) == 1 + max_retries


# -- the declared command, run --------------------------------------------------


@pytest.fixture
def deployment(kerberos: Realm, data_dir: Path) -> Iterator[Deployment]:
    if not apache_available():
        pytest.skip("apache2 or libapache2-mod-auth-gssapi missing (ops/dev/bootstrap.sh --test)")
    with deployed(kerberos, data_dir) as running:
        yield running


def declared_command(
    deployment: Deployment, reportdir: Path, keytab: Path, cache: Path, **variables: str
) -> tuple[list[str], dict[str, str]]:
    """The job's command line and its whole environment, expanded from the
    submit file with the DAG's variables; only what stands for the site
    (server URL, keytab and cache paths, the installed dqr-upload) is replaced,
    and each of those must be found as written in the file."""
    submit = submit_description()
    for name, value in {**upload_node_variables(), **variables}.items():
        submit[name] = value
    submit["reportdir"] = str(reportdir)
    arguments = split_condor_words(submit.expand("arguments"))
    assert EXAMPLE_SERVER in arguments
    arguments[arguments.index(EXAMPLE_SERVER)] = deployment.url
    environment = condor_environment(submit.expand("environment"))
    assert environment["KRB5_CLIENT_KTNAME"] == EXAMPLE_KEYTAB
    assert environment["DQRXFER_CACHE_DIR"] == EXAMPLE_CACHE_DIR
    environment["KRB5_CLIENT_KTNAME"] = str(keytab)
    environment["DQRXFER_CACHE_DIR"] = str(cache)
    # What a site has in /etc (krb5.conf; a CA the system trusts), here
    # from the test realm and the test certificate.  Nothing else: getenv = False.
    environment["KRB5_CONFIG"] = deployment.realm.env["KRB5_CONFIG"]
    environment["REQUESTS_CA_BUNDLE"] = str(deployment.apache.cert)
    executable = tool(Path(submit.expand("executable")).name)
    return [executable, *arguments], environment


def run_job(
    command: list[str], environment: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, env=environment, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def make_report(directory: Path) -> str:
    directory.mkdir(parents=True)
    content = os.urandom(3 * 1024 * 1024)
    (directory / "summary.html").write_text("<h1>S230518h at LLO</h1>\n")
    (directory / "omega.bin").write_bytes(content)
    return hashlib.sha256(content).hexdigest()


def test_the_declared_command_uploads_and_exits_as_the_policy_expects(
    deployment: Deployment, tmp_path: Path
) -> None:
    variables = upload_node_variables()
    graceid, site, revision = variables["graceid"], variables["site"], variables["revision"]
    reportdir = tmp_path / "public html" / f"{graceid}_dir" / f"{graceid}_{site}_{revision}"
    digest = make_report(reportdir)
    cache = tmp_path / "cache"
    keytab = deployment.realm.llo_robot_keytab

    # 0: the report lands where the links point.
    command, environment = declared_command(deployment, reportdir, keytab, cache)
    assert "HOME" not in environment and "KRB5CCNAME" in environment
    done = run_job(command, environment, tmp_path)
    assert done.returncode == DONE, done.stderr
    landed = deployment.server.data_dir / f"reports/O4/{graceid}_dir/{graceid}_{site}_{revision}"
    assert hashlib.sha256((landed / "omega.bin").read_bytes()).hexdigest() == digest
    assert (landed / "summary.html").exists()

    # 4: the LLO robot may not upload for LHO; the refusal is final.
    lho = tmp_path / f"{graceid}_dir" / f"{graceid}_lho_{revision}"
    make_report(lho)
    command, environment = declared_command(deployment, lho, keytab, cache, site="lho")
    refused = run_job(command, environment, tmp_path)
    assert refused.returncode == REFUSED, refused.stderr
    assert "refused (403)" in refused.stderr

    # 3: the keytab the environment names is missing.
    command, environment = declared_command(
        deployment, reportdir, tmp_path / "no-such.keytab", cache, revision="2"
    )
    missing = run_job(command, environment, tmp_path)
    assert missing.returncode == AUTHENTICATION, missing.stderr
    assert "KRB5_CLIENT_KTNAME" in missing.stderr

    # 5: the server is down, behind Apache (503) and with Apache (refused
    # connections).  The declared retries would go on for about eight
    # minutes (8 retries, waits doubling from 2 s); one quick retry shows
    # the same ending.
    quick = ["--retries", "1", "--retry-wait", "0.1"]
    command, environment = declared_command(deployment, reportdir, keytab, cache, revision="3")
    deployment.server.stop()
    backend_down = run_job([*command, *quick], environment, tmp_path)
    assert backend_down.returncode == GAVE_UP, backend_down.stderr
    assert "503" in backend_down.stderr
    # (Stopping Apache removes its directory, certificate included.)
    ca = tmp_path / "ca.pem"
    ca.write_bytes(deployment.apache.cert.read_bytes())
    environment["REQUESTS_CA_BUNDLE"] = str(ca)
    deployment.apache.stop()
    all_down = run_job([*command, *quick], environment, tmp_path)
    assert all_down.returncode == GAVE_UP, all_down.stderr
    assert "connection refused" in all_down.stderr
