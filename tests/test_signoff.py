"""Sign-off records and ``scrutiny verify`` (issue 18, item 3).

One small run (a linear model on breast_cancer, the performance family, a policy that makes
balanced accuracy fail and calibration pass) is audited once and copied into each test. The
records are checked against hashes, chain links and Ed25519 signatures computed here with
hashlib and cryptography, not with the module's own helpers; every tampering of a file of the
run, the policy or a record makes ``verify`` exit 1 with one line naming it; bad input to
``sign`` is one ``error:`` line, exit 2, and the run folder unchanged to the byte.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import re
import shutil
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import torch
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from scrutiny.audit.run import signoff
from scrutiny.audit.run.run_folder import list_runs, load_run
from scrutiny.errors import InputError

from .test_cli import assert_one_line_error, cli

POLICY = """
[checks."performance.balanced_accuracy"]
fail_below = 0.999

[checks."performance.calibration_error"]
fail_above = 1.0
"""
ZEROS = "0" * 64


@pytest.fixture(scope="module")
def audited(tmp_path_factory) -> tuple[Path, Path]:
    """The pristine run and the policy file it was audited under."""
    from scrutiny.audit.run.runner import run_audit
    from scrutiny.models import load_dataset

    root = tmp_path_factory.mktemp("signoff")
    policy = root / "policy.toml"
    policy.write_text(POLICY, encoding="utf-8")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(30, 2))
    result = run_audit(model, load_dataset("breast_cancer"), config={"families": ["performance"]}, policy=policy,
                       out=root / "run", progress=False, device="cpu")
    statuses = {f.check: f.status for f in result.findings}
    assert statuses == {"performance.balanced_accuracy": "fail", "performance.calibration_error": "pass"}, statuses
    return root / "run", policy


@pytest.fixture
def run(audited, tmp_path) -> Path:
    """A copy of the run, in a folder of its own, and its policy beside it (``policy.toml``)."""
    shutil.copytree(audited[0], tmp_path / "runs" / "run")
    shutil.copy(audited[1], tmp_path / "policy.toml")
    return tmp_path / "runs" / "run"


def policy_of(run: Path) -> Path:
    return run.parent.parent / "policy.toml"


def make_key(folder: Path, name: str) -> tuple[Path, Path, ed25519.Ed25519PrivateKey]:
    """An Ed25519 key pair written as unencrypted PKCS#8 PEM and SubjectPublicKeyInfo PEM."""
    key = ed25519.Ed25519PrivateKey.generate()
    private, public = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public, key


def sign(capsys, run: Path, *extra, name="Ada Validator", role="validator", decision="reject",
         reason="balanced accuracy fails the policy") -> tuple[int, str, str]:
    return cli(capsys, "sign", run, "--name", name, "--role", role, "--decision", decision, "--reason", reason,
               "--policy", policy_of(run), *extra)


def verify(capsys, run: Path, *extra) -> tuple[int, list[str]]:
    code, out, err = cli(capsys, "verify", run, *extra)
    assert "Traceback" not in out + err and err == "", err
    return code, [line for line in out.splitlines() if line.strip()]


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) and its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def lines_of(run: Path) -> list[bytes]:
    return (run / "signoffs.jsonl").read_bytes().splitlines()


def canonical(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def rewrite(run: Path, number: int, change) -> None:
    """Apply ``change`` to record ``number`` (1-based) and write it back canonically, as a forger would."""
    lines = lines_of(run)
    record = json.loads(lines[number - 1])
    change(record)
    lines[number - 1] = canonical(record)
    (run / "signoffs.jsonl").write_bytes(b"\n".join(lines) + b"\n")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def signed_twice(capsys, run: Path, key: Path) -> None:
    """A validator rejects (signed with ``key``); an approver accepts with the failure as an exception."""
    assert sign(capsys, run, "--key", key)[0] == 0
    assert sign(capsys, run, "--accept-exception", "performance.balanced_accuracy", name="Bo Approver",
                role="approver", decision="accept", reason="accepted for the pilot only")[0] == 0


# ---------------------------------------------------------------- the records and a clean verification


def test_two_signoffs_verify_and_change_nothing_else(run, capsys):
    validator_pem, validator_pub, validator = make_key(run.parent.parent, "validator")
    approver_pem, approver_pub, approver = make_key(run.parent.parent, "approver")
    before = tree(run)
    started = datetime.now(UTC).replace(microsecond=0)
    code, out, err = sign(capsys, run, "--key", validator_pem)
    assert code == 0 and err == "" and "sign-off written to" in out and "validator Ada Validator, reject" in out
    code, out, err = sign(capsys, run, "--key", approver_pem, "--accept-exception", "performance.balanced_accuracy",
                          name="Bo Approver", role="approver", decision="accept", reason="accepted for the pilot only")
    assert code == 0 and err == "", err
    after = tree(run)
    assert set(after) == set(before) | {"signoffs.jsonl"}
    assert all(after[name] == before[name] for name in before)  # findings.json byte-identical, and the rest
    assert code == 0

    # the records, against hashes and signatures computed here
    lines = lines_of(run)
    assert len(lines) == 2 and (run / "signoffs.jsonl").read_bytes().endswith(b"\n")
    records = [json.loads(line) for line in lines]
    for line, record in zip(lines, records):
        assert line == canonical(record)  # one canonical JSON object per line
    files = {name: sha256((run / name).read_bytes()) for name in ("findings.json", "manifest.json")}
    policy = policy_of(run)
    for record, key, expected in zip(records, (validator, approver), [
            ("Ada Validator", "validator", "reject", [], "balanced accuracy fails the policy"),
            ("Bo Approver", "approver", "accept", ["performance.balanced_accuracy"], "accepted for the pilot only")]):
        assert (record["name"], record["role"], record["decision"], record["accepted_exceptions"],
                record["reason"]) == expected
        assert record["findings_sha256"] == files["findings.json"]
        assert record["manifest_sha256"] == files["manifest.json"]
        assert record["policy"] == {"source": str(policy.resolve()), "sha256": sha256(policy.read_bytes())}
        assert record["verdict"] == json.loads((run / "findings.json").read_text())["verdict"] == "fail"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["time"])
        when = datetime.strptime(record["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert started <= when <= datetime.now(UTC) + timedelta(seconds=1)
        body = canonical({k: v for k, v in record.items() if k not in ("record_sha256", "signature")})
        assert record["record_sha256"] == sha256(body)
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        assert base64.b64decode(record["public_key"]) == raw
        key.public_key().verify(base64.b64decode(record["signature"]), body)  # raises if it does not match
    assert records[0]["previous_sha256"] == ZEROS
    assert records[1]["previous_sha256"] == sha256(lines[0])

    # verify: clean, with and without the expected keys; the library says the same
    assert verify(capsys, run) == (0, ["verified: 2 sign-off records, all file hashes match"])
    assert verify(capsys, run, "--public-key", validator_pub, "--public-key", approver_pub)[0] == 0
    result = signoff.verify_run(run)
    assert result.ok and result.lines == 2 and [r["record_sha256"] for r in result.records] == \
        [r["record_sha256"] for r in records]
    assert signoff.read_signoffs(run) == records
    # the run still loads and lists, and a report written into it is not evidence
    assert load_run(run).findings["verdict"] == "fail" and list_runs(run.parent) == [run]
    (run / "report").mkdir()
    (run / "report" / "report.md").write_text("# report\n")
    assert verify(capsys, run)[0] == 0


def test_a_run_without_signoffs_verifies_its_files(run, capsys):
    assert verify(capsys, run) == (0, ["verified: 0 sign-off records, all file hashes match"])
    (run / "arrays" / "predictions.npz").write_bytes(b"not the arrays")
    code, lines = verify(capsys, run)
    assert code == 1 and len(lines) == 1 and str(run / "arrays" / "predictions.npz") in lines[0], lines
    assert "differs from manifest.json" in lines[0]


def test_signing_with_the_policy_the_manifest_names_and_the_library_call(run, audited):
    record = signoff.sign_run(run, name="Owen Owner", role="owner", decision="accept-with-conditions",
                              reason="  monitor monthly\n and retrain by Q3  ")
    assert record["policy"] == {"source": str(audited[1].resolve()), "sha256": sha256(audited[1].read_bytes())}
    assert record["reason"] == "monitor monthly\n and retrain by Q3" and "signature" not in record
    assert record["accepted_exceptions"] == [] and record["decision"] == "accept-with-conditions"
    assert signoff.read_signoffs(run) == [record] and signoff.verify_run(run).ok
    other = policy_of(run)
    other.write_text(POLICY.replace("0.999", "0.5"), encoding="utf-8")
    with pytest.raises(InputError, match=r"thresholds differ .*check performance\.balanced_accuracy"):
        signoff.sign_run(run, name="O", role="owner", decision="reject", reason="r", policy=other)


def test_a_run_audited_under_the_default_policy_records_it(tmp_path, capsys):
    from scrutiny.audit.run.policy import DEFAULT_POLICY
    from scrutiny.audit.run.runner import run_audit
    from scrutiny.models import load_dataset

    torch.manual_seed(0)
    run_audit(torch.nn.Sequential(torch.nn.Linear(30, 2)), load_dataset("breast_cancer"),
              config={"families": ["performance"]}, out=tmp_path / "run", progress=False, device="cpu")
    assert cli(capsys, "sign", tmp_path / "run", "--name", "V", "--role", "validator", "--decision", "reject",
               "--reason", "r")[0] == 0
    record = json.loads(lines_of(tmp_path / "run")[0])
    assert record["policy"] == {"source": "default", "sha256": sha256(DEFAULT_POLICY.read_bytes())}
    assert verify(capsys, tmp_path / "run")[0] == 0


def test_concurrent_signers_all_land_on_one_chain(run):
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            signoff.sign_run(run, name=f"signer {i}", role="validator", decision="reject", reason="r",
                             policy=policy_of(run))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    lines = lines_of(run)
    assert sorted(json.loads(line)["name"] for line in lines) == [f"signer {i}" for i in range(4)]
    assert [json.loads(line)["previous_sha256"] for line in lines] == [ZEROS, *(sha256(line) for line in lines[:-1])]
    assert signoff.verify_run(run).ok


# ---------------------------------------------------------------- tampering


def _edit_findings(run: Path) -> str:
    path = run / "findings.json"
    text = path.read_text(encoding="utf-8")
    assert '"verdict": "fail"' in text
    path.write_text(text.replace('"verdict": "fail"', '"verdict": "pass"'), encoding="utf-8")
    return str(path)


def _edit_manifest(run: Path) -> str:
    path = run / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["verdict"] = "pass"  # the files table still matches every file
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return str(path)


def _edit_arrays(run: Path) -> str:
    path = run / "arrays" / "predictions.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return str(path)


def _edit_policy(run: Path) -> str:
    path = policy_of(run)
    path.write_text(path.read_text(encoding="utf-8").replace("0.999", "0.5"), encoding="utf-8")
    return f"policy {path.resolve()}"


def _edit_first_reason(run: Path) -> str:
    rewrite(run, 1, lambda r: r.update(reason="looks fine to me"))
    return "signoffs.jsonl: record 1: changed after it was written"


def _edit_last_reason(run: Path) -> str:
    rewrite(run, 2, lambda r: r.update(reason="no conditions"))
    return "signoffs.jsonl: record 2: changed after it was written"


@pytest.mark.parametrize("tamper", [_edit_findings, _edit_manifest, _edit_arrays, _edit_policy, _edit_first_reason,
                                    _edit_last_reason],
                         ids=["findings", "manifest", "arrays", "policy", "first-record", "last-record"])
def test_verify_names_what_was_changed_after_signing(run, capsys, tamper):
    key, _, _ = make_key(run.parent.parent, "validator")
    signed_twice(capsys, run, key)
    assert verify(capsys, run)[0] == 0
    named = tamper(run)
    code, lines = verify(capsys, run)
    assert code == 1 and len(lines) == 1, lines
    assert named in lines[0], (named, lines[0])


def test_removing_a_record_breaks_the_chain(run, capsys):
    for name in ("first", "second", "third"):
        assert sign(capsys, run, name=name)[0] == 0
    lines = lines_of(run)
    (run / "signoffs.jsonl").write_bytes(lines[0] + b"\n" + lines[2] + b"\n")  # the middle one removed
    code, problems = verify(capsys, run)
    assert code == 1 and len(problems) == 1, problems
    assert "signoffs.jsonl: record 2: chain broken" in problems[0] and "(line 1)" in problems[0]
    (run / "signoffs.jsonl").write_bytes(lines[1] + b"\n" + lines[2] + b"\n")  # the first one removed
    code, problems = verify(capsys, run)
    assert code == 1 and len(problems) == 1 and "record 1: chain broken: the first record" in problems[0], problems


def test_signatures_that_do_not_match_fail(run, capsys):
    key, public, _ = make_key(run.parent.parent, "validator")
    _, stranger, _ = make_key(run.parent.parent, "stranger")
    assert sign(capsys, run, "--key", key)[0] == 0
    assert sign(capsys, run, "--key", key, name="Bo Approver", role="approver")[0] == 0
    original = (run / "signoffs.jsonl").read_bytes()

    # a key that is not the expected one
    code, lines = verify(capsys, run, "--public-key", stranger)
    assert code == 1 and len(lines) == 2 and all("not one of the expected keys" in line for line in lines), lines
    assert "record 1" in lines[0] and "record 2" in lines[1]

    # a forger without the key changes the decision and recomputes the record's own hash
    def forge(record: dict) -> None:
        record["decision"] = "accept"
        body = canonical({k: v for k, v in record.items() if k not in ("record_sha256", "signature")})
        record["record_sha256"] = sha256(body)

    rewrite(run, 2, forge)
    code, lines = verify(capsys, run)
    assert code == 1 and lines == [f"{run / 'signoffs.jsonl'}: record 2: signature does not match the record and "
                                   "its public key"], lines

    # the decision edited by hand: the record's hash and its signature both say so, on one line
    (run / "signoffs.jsonl").write_bytes(original)
    rewrite(run, 2, lambda r: r.update(decision="accept"))
    code, lines = verify(capsys, run, "--public-key", public)
    assert code == 1 and len(lines) == 1 and "record 2: changed after it was written" in lines[0], lines
    assert "signature does not match" in lines[0]

    # an unsigned record when signatures are expected
    (run / "signoffs.jsonl").write_bytes(original)
    assert sign(capsys, run, name="Owen Owner", role="owner")[0] == 0
    code, lines = verify(capsys, run, "--public-key", public)
    assert code == 1 and len(lines) == 1 and "record 3: not signed" in lines[0], lines


def test_without_cryptography_a_signature_cannot_be_made_or_checked(run, capsys, monkeypatch):
    key, _, _ = make_key(run.parent.parent, "validator")
    assert sign(capsys, run, "--key", key)[0] == 0
    monkeypatch.setattr(signoff, "_crypto", lambda: None)
    before = tree(run)
    assert_one_line_error(*sign(capsys, run, "--key", key), "needs the cryptography package",
                          'pip install "scrutiny[sign]"')
    assert tree(run) == before
    code, lines = verify(capsys, run)
    assert code == 1 and len(lines) == 1 and "record 1: signed, and the cryptography package" in lines[0], lines


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing written


def _ec_key(folder: Path) -> Path:
    path = folder / "ec.pem"
    path.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return path


def _encrypted(folder: Path) -> Path:
    path = folder / "encrypted.pem"
    path.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")))
    return path


def _garbage(folder: Path) -> Path:
    path = folder / "garbage.pem"
    path.write_text("not a key\n")
    return path


@pytest.mark.parametrize("args, fragments", [
    ({"role": "boss"}, ["--role boss", "validator, approver, owner"]),
    ({"decision": "maybe"}, ["--decision maybe", "accept, reject, accept-with-conditions"]),
    ({"name": "  "}, ["name: empty"]),
    ({"name": "Ada\nLovelace"}, ["name", "one line"]),
    ({"extra": ["--accept-exception", "fairness.disparate_impact"]},
     ["accepted exception 'fairness.disparate_impact'", "no check or finding", "findings.json"]),
    ({"extra": ["--accept-exception", "performance.calibration_error"]},
     ["accepted exception 'performance.calibration_error'", "passes"]),
    ({"decision": "accept"}, ["--decision accept", "performance.balanced_accuracy fails", "--accept-exception"]),
    ({"extra": ["--key", "missing.pem"]}, ["key missing.pem: cannot read"]),
    ({"extra": ["--key", _garbage]}, ["garbage.pem: not a PEM private key"]),
    ({"extra": ["--key", _ec_key]}, ["ec.pem: of type", "expected an Ed25519 private key"]),
    ({"extra": ["--key", _encrypted]}, ["encrypted.pem: encrypted; give an unencrypted"]),
    ({"extra": ["--policy", "nowhere.toml"]}, ["--policy nowhere.toml: no such file"]),
], ids=["role", "decision", "empty-name", "two-line-name", "unknown-check", "passing-check", "accept-open-failure",
        "missing-key", "garbage-key", "ec-key", "encrypted-key", "missing-policy"])
def test_sign_refuses_bad_input(run, capsys, monkeypatch, args, fragments):
    monkeypatch.chdir(run.parent.parent)
    extra = [a(run.parent.parent) if callable(a) else a for a in args.get("extra", [])]
    options = {k: v for k, v in args.items() if k != "extra"}
    before = tree(run)
    assert_one_line_error(*sign(capsys, run, *extra, **options), *fragments)
    assert tree(run) == before


def test_sign_refuses_a_run_that_is_missing_or_does_not_verify(run, capsys, tmp_path):
    bare = ["--name", "V", "--role", "validator", "--decision", "reject", "--reason", "r"]
    assert_one_line_error(*cli(capsys, "sign", tmp_path / "nowhere", *bare), "nowhere: no such run folder")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(*cli(capsys, "sign", tmp_path / "empty", *bare), "manifest.json: missing")
    assert list((tmp_path / "empty").iterdir()) == []
    assert sign(capsys, run)[0] == 0
    _edit_arrays(run)
    before = tree(run)
    assert_one_line_error(*sign(capsys, run), "does not verify", "arrays/predictions.npz")
    assert tree(run) == before
    _edit_findings(run)  # load_run refuses it before any verification
    assert_one_line_error(*sign(capsys, run), "findings.json")


def test_verify_refuses_what_is_not_a_run(run, capsys, tmp_path):
    assert_one_line_error(*cli(capsys, "verify", tmp_path / "nowhere"), "nowhere: no such run folder")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(*cli(capsys, "verify", tmp_path / "empty"), "is not a run folder")
    (tmp_path / "garbage.pem").write_text("nope\n")
    assert_one_line_error(*cli(capsys, "verify", run, "--public-key", tmp_path / "garbage.pem"),
                          "public key", "garbage.pem", "not a PEM public key")
    assert_one_line_error(*cli(capsys, "verify", run, "--policy", tmp_path / "none.toml"), "--policy", "none.toml")


def test_a_failed_write_leaves_the_records_as_they_were(run, capsys, monkeypatch):
    assert sign(capsys, run)[0] == 0
    before = tree(run)

    def full(source, target):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("scrutiny.safe_write.os.replace", full)
    assert_one_line_error(*sign(capsys, run, name="second"), "signoffs.jsonl: cannot write", "No space left")
    assert tree(run) == before  # neither the records nor a hidden file changed
