"""Sign-off records and the evidence chain of a run folder.

A person who has read a run signs it off: :func:`sign_run` appends one record to
``RUN/signoffs.jsonl`` saying who (``name``, ``role``: validator, approver or owner), when
(``time``, UTC, ISO 8601 with ``Z``), what they decided (``decision``: accept, reject or
accept-with-conditions) and why (``reason``), which checks they accept as exceptions
(``accepted_exceptions``), and what they saw: the SHA-256 of ``findings.json`` and of
``manifest.json`` (which holds the SHA-256 of every other file of the run) and of the policy
file the run was judged by (``policy``: ``source`` and ``sha256``). Records form a chain:
``previous_sha256`` is the SHA-256 of the previous record (64 zeros for the first), and
``record_sha256`` the SHA-256 of the record itself less that field and the signature. With an
Ed25519 private key the record also carries ``public_key`` and ``signature`` (base64; the
signature is over the same bytes ``record_sha256`` hashes, public key included). Every hash is
of a record's canonical form: one JSON object, keys sorted, no spaces, UTF-8, which is also how
each line of the file is written.

:func:`verify_run` checks every file of the run against the manifest, every record's hashes
against the files and the policy as they are now, the chain, and every signature, and returns
one line per problem, naming the file or the record (by its line number). A run without
records verifies its files only. Files the manifest does not list (a report written into
``RUN/report/``) are not evidence and are not checked. What the chain cannot show: the removal
of the *last* records, or a whole file of records rewritten by someone holding no key that
:func:`verify_run` is told to expect; keep the public keys (and a copy of the newest record's
``record_sha256``) elsewhere to guard against that.

Rules for a decision: ``accept`` needs every failed finding named as an accepted exception (by
its check, such as ``fairness.disparate_impact``, or its finding id,
``fairness.disparate_impact[sex]``); ``accept-with-conditions`` and ``reject`` may leave failed
checks open (the reason states the conditions). An exception must name a check or finding of
the run that does not pass. A run that does not verify is not signed. Signing never changes
any file of the run but ``signoffs.jsonl``, which is rewritten whole through a hidden file and
one rename (a reader, or an interrupted signer, sees the old records or the new ones, never a
part), while the run folder is locked against another signer (``flock``, where the system has
it).

Signing needs the ``cryptography`` package (``pip install "scrutiny[sign]"``) only with a key,
and verifying only for signed records.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scrutiny.errors import InputError
from scrutiny.hashing import sha256_file
from scrutiny.safe_write import read_manifest, shown, write_file

from .policy import DEFAULT_POLICY, load_policy
from .run_folder import FINDINGS, MANIFEST, RUN_FORMAT, RunError, load_run, to_json

__all__ = ["SIGNOFFS", "ROLES", "DECISIONS", "GENESIS", "RECORD_VERSION", "OpenFailures", "Verification", "sign_run",
           "verify_run", "read_signoffs", "canonical", "record_hash", "load_public_key"]

SIGNOFFS = "signoffs.jsonl"
ROLES = ("validator", "approver", "owner")
DECISIONS = ("accept", "reject", "accept-with-conditions")
GENESIS = "0" * 64  # the previous_sha256 of the first record
RECORD_VERSION = 1
_UNSIGNED = ("record_sha256", "signature")  # the fields a record's own hash and signature leave out
_FIELDS: dict[str, type] = {
    "version": int, "name": str, "role": str, "decision": str, "reason": str, "time": str,
    "accepted_exceptions": list, "verdict": str, "findings_sha256": str, "manifest_sha256": str, "policy": dict,
    "previous_sha256": str, "record_sha256": str,
}
_HEX = re.compile(r"^[0-9a-f]{64}$")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_EXTRA = 'pip install "scrutiny[sign]"'


@dataclass(frozen=True)
class Verification:
    """What :func:`verify_run` found.

    Attributes:
        records: the sign-off records that could be read, in file order (a problem may concern them).
        lines: the lines of ``signoffs.jsonl`` (records and any unreadable line): 0 without the file.
        problems: one line per problem, naming the file or record; empty when everything verifies.
    """

    records: tuple[dict, ...]
    lines: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """One line for a run that verifies."""
        noun = "record" if self.lines == 1 else "records"
        return f"verified: {self.lines} sign-off {noun}, all file hashes match"


def canonical(record: dict) -> bytes:
    """A record's canonical bytes: JSON, keys sorted, no spaces, UTF-8."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def record_hash(record: dict) -> str:
    """SHA-256 of a whole record's canonical bytes: the next record's ``previous_sha256``."""
    return hashlib.sha256(canonical(record)).hexdigest()


def _body(record: dict) -> bytes:
    """The bytes ``record_sha256`` hashes and the signature signs: the record less those two fields."""
    return canonical({k: v for k, v in record.items() if k not in _UNSIGNED})


# ---------------------------------------------------------------- signing


def sign_run(run: str | os.PathLike[str], *, name: str, role: str, decision: str, reason: str,
             accept_exceptions: Iterable[str] = (), key: str | os.PathLike[str] | None = None,
             policy: str | os.PathLike[str] | None = None) -> dict:
    """Append a sign-off record to ``run``'s ``signoffs.jsonl`` and return it (see the module docstring).

    Args:
        run: a run folder written by ``scrutiny audit``.
        name: who signs.
        role: ``validator``, ``approver`` or ``owner``.
        decision: ``accept``, ``reject`` or ``accept-with-conditions``.
        reason: why (for accept-with-conditions: the conditions).
        accept_exceptions: checks (``fairness.disparate_impact``) or findings
            (``fairness.disparate_impact[sex]``) of the run that do not pass and are accepted.
        key: an unencrypted Ed25519 private key (PEM) to sign the record with. Default: unsigned.
        policy: the policy file the run was audited under. Default: the file the manifest names
            (the shipped default policy for ``default``). Its thresholds must be the run's.

    Raises:
        InputError: bad input, a run that is missing, incomplete or does not verify (nothing is written).

    Example:
        >>> sign_run("runs/adult-mlp", name="A. Validator", role="validator", decision="reject",
        ...          reason="fails disparate impact on sex")  # doctest: +SKIP

    Example:
        >>> record = sign_run("runs/adult-mlp", name="A. Validator", role="validator", decision="reject",
        ...                   reason="disparate impact on sex fails the policy")  # doctest: +SKIP
        >>> record["record_sha256"][:12]  # doctest: +SKIP
        '3f9c0a51d2e4'
    """
    if not isinstance(run, (str, os.PathLike)):
        raise TypeError(f"run must be a str or os.PathLike, got {type(run).__name__}")
    folder = Path(run)
    name = _line_of_text(name, "name")
    reason = _text(reason, "reason")
    if role not in ROLES:
        raise InputError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    if decision not in DECISIONS:
        raise InputError(f"decision {decision!r}: expected one of {', '.join(DECISIONS)}")
    exceptions = sorted({_line_of_text(e, "accepted exception") for e in accept_exceptions})
    signer = _private_key(Path(key)) if key is not None else None
    loaded = load_run(folder)  # a missing, incomplete or corrupt run: RunError naming the file
    _check_exceptions(loaded.path, loaded.findings["findings"], exceptions, decision)
    policy_file, policy_source = _policy_file(folder, loaded.manifest, policy)
    with _locked(folder):
        state = verify_run(folder, policy=policy)
        if state.problems:
            more = f" (and {len(state.problems) - 1} more)" if len(state.problems) > 1 else ""
            raise InputError(f"{shown(folder)}: does not verify, so it is not signed: {state.problems[0]}{more}")
        target = folder / SIGNOFFS
        existing = target.read_bytes() if target.exists() else b""
        if existing and not existing.endswith(b"\n"):
            existing += b"\n"
        record: dict[str, Any] = {
            "version": RECORD_VERSION, "name": name, "role": role, "decision": decision, "reason": reason,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "accepted_exceptions": exceptions,
            "verdict": loaded.findings["verdict"],
            "findings_sha256": sha256_file(folder / FINDINGS), "manifest_sha256": sha256_file(folder / MANIFEST),
            "policy": {"source": policy_source, "sha256": sha256_file(policy_file)},
            "previous_sha256": record_hash(state.records[-1]) if state.records else GENESIS,
        }
        if signer is not None:
            record["public_key"] = _b64(signer.public_key().public_bytes_raw())
        body = _body(record)
        record["record_sha256"] = hashlib.sha256(body).hexdigest()
        if signer is not None:
            record["signature"] = _b64(signer.sign(body))
        write_file(target, existing + canonical(record) + b"\n")
    return record


def _line_of_text(value, what: str) -> str:
    text = _text(value, what)
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InputError(f"{what} {text!r}: expected one line of text, without control characters")
    return text


def _text(value, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise InputError(f"{what}: empty; expected some text")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{what} {shown(text)!r}: not valid UTF-8") from None
    return text


def _check_exceptions(folder: Path, findings: list[dict], exceptions: list[str], decision: str) -> None:
    """Each exception names a check or finding of the run that does not pass; ``accept`` covers every failure."""
    for exception in exceptions:
        named = [f for f in findings if exception in (f["check"], f["id"])]
        if not named:
            example = f"; expected a check such as {findings[0]['check']} or a finding id such as " \
                      f"{findings[0]['id']}" if findings else ""
            raise InputError(f"accepted exception {exception!r}: no check or finding of that name in "
                             f"{shown(folder / FINDINGS)}{example}")
        if all(f["status"] == "pass" for f in named):
            raise InputError(f"accepted exception {exception!r}: it passes in {shown(folder / FINDINGS)}; "
                             "only a check that fails, warns or was not decided is accepted as an exception")
    if decision == "accept":
        open_failures = [f["id"] for f in findings if f["status"] == "fail"
                         and f["check"] not in exceptions and f["id"] not in exceptions]
        if open_failures:
            raise OpenFailures(open_failures)


class OpenFailures(InputError):
    """``accept`` while findings fail that are not accepted as exceptions; ``failing`` lists their ids."""

    def __init__(self, failing: list[str]):
        self.failing = failing
        super().__init__(f"decision accept: {_failing_words(failing)}; accept them as exceptions, or decide "
                         "accept-with-conditions or reject")


def _failing_words(failing: list[str]) -> str:
    """``performance.balanced_accuracy fails and is not accepted as an exception`` and the plural."""
    if len(failing) == 1:
        return f"{failing[0]} fails and is not accepted as an exception"
    return f"{len(failing)} findings fail and are not accepted as exceptions: {', '.join(failing)}"


def _policy_file(folder: Path, manifest: dict, given: str | os.PathLike[str] | None) -> tuple[Path, str]:
    """The policy file to hash, and how a record names it: ``default`` or its absolute path. The
    file's thresholds must be those the manifest says the run was judged by."""
    recorded = manifest.get("policy")
    if not isinstance(recorded, dict) or not isinstance(recorded.get("checks"), dict):
        raise RunError(f"{shown(folder / MANIFEST)}: records no policy table; the run cannot be signed")
    source = recorded.get("source")
    if given is not None:
        path = Path(given)
    elif source == "default":
        path = DEFAULT_POLICY
    elif isinstance(source, str) and source:
        path = Path(source)
    else:
        raise RunError(f"{shown(folder / MANIFEST)}: names no policy file; give the policy file the run was audited under")
    if not path.is_file():
        named = "" if given is not None else f" (the policy {shown(folder / MANIFEST)} names)"
        raise InputError(f"policy {shown(path)}{named}: no such file; give the policy file the run was audited under")
    default = path.resolve() == DEFAULT_POLICY.resolve()
    effective = load_policy(None if default else path)
    ours = json.loads(to_json({"checks": effective.checks, "groups": effective.groups}))
    theirs = {"checks": recorded["checks"], "groups": recorded.get("groups", ours["groups"])}
    if ours != theirs:
        differing = sorted(k for k in set(ours["checks"]) | set(theirs["checks"])
                           if ours["checks"].get(k) != theirs["checks"].get(k))
        what = f"check {differing[0]}" if differing else "[groups]"
        raise InputError(f"policy {shown(path)}: its thresholds differ from those the run was audited under "
                         f"({what}, in {shown(folder / MANIFEST)}); give the policy file the run was audited under")
    return path, "default" if default else str(path.resolve())


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run folder itself (no lock file), where the system has flock."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        raise InputError(f"{shown(folder)}: cannot open ({exc.strerror or exc})") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # closing releases the lock


# ---------------------------------------------------------------- keys


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        return None
    return serialization, ed25519, InvalidSignature, UnsupportedAlgorithm


def _need_crypto(what: str):
    crypto = _crypto()
    if crypto is None:
        raise InputError(f"{what} needs the cryptography package: {_EXTRA}")
    return crypto


def _key_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{what} {shown(path)}: cannot read ({exc.strerror or exc})") from None


def _private_key(path: Path):
    serialization, ed25519, _, unsupported = _need_crypto(f"signing with the key {shown(path)}")
    data = _key_bytes(path, "key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # encrypted
        raise InputError(f"key {shown(path)}: encrypted; give an unencrypted Ed25519 private key (PEM)") from None
    except (ValueError, unsupported) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"key {shown(path)}: not a PEM private key ({detail}); expected an unencrypted Ed25519 "
                         "private key, such as `openssl genpkey -algorithm ed25519` writes") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise InputError(f"key {shown(path)}: of type {_kind(key)}; expected an Ed25519 private key")
    return key


def load_public_key(path: str | os.PathLike[str]) -> str:
    """An Ed25519 public key file (PEM) as a record names it: the raw 32 bytes, base64."""
    path = Path(path)
    serialization, ed25519, _, unsupported = _need_crypto(f"the public key {shown(path)}")
    data = _key_bytes(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, unsupported) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"public key {shown(path)}: not a PEM public key ({detail}); expected an Ed25519 public "
                         "key, such as `openssl pkey -pubout` writes") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise InputError(f"public key {shown(path)}: of type {_kind(key)}; expected an Ed25519 public key")
    return _b64(key.public_bytes_raw())


def _kind(key) -> str:
    """``RSA``, ``EllipticCurve``, ``Ed448``: what cryptography's key class is named, less its suffix."""
    for base in type(key).__mro__:
        for suffix in ("PrivateKey", "PublicKey"):
            if base.__name__.endswith(suffix) and base.__name__ != suffix:
                return base.__name__.removesuffix(suffix).lstrip("_")
    return type(key).__name__


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ---------------------------------------------------------------- verifying


def read_signoffs(run: str | os.PathLike[str]) -> list[dict]:
    """The sign-off records of ``run`` that can be read, in order (none without ``signoffs.jsonl``);
    whether they verify is :func:`verify_run`'s to say."""
    path = Path(run) / SIGNOFFS
    return [record for _, record in _read_lines(path)[1] if record is not None] if path.exists() else []


def verify_run(run: str | os.PathLike[str], *, public_keys: Iterable[str] = (),
               policy: str | os.PathLike[str] | None = None) -> Verification:
    """Check ``run``: every file against the manifest, every sign-off record against the files and
    the policy as they are now, the chain of records, and every signature.

    Args:
        run: a run folder.
        public_keys: expected signers (base64 raw Ed25519 keys, :func:`load_public_key`): when
            given, every record must be signed by one of them.
        policy: where the policy file is now, for records made elsewhere. Default: where each
            record names it (``default``: the shipped default policy).

    Returns:
        A :class:`Verification`: its ``problems`` (one line each), empty when the run verifies.

    Raises:
        RunError: ``run`` is not a folder, or neither a run folder (no ``manifest.json``) nor a
            folder of sign-off records.

    Example:
        >>> checked = verify_run("runs/adult-mlp")  # doctest: +SKIP
        >>> checked.ok, checked.problems  # doctest: +SKIP
        (True, [])
    """
    if not isinstance(run, (str, os.PathLike)):
        raise TypeError(f"run must be a str or os.PathLike, got {type(run).__name__}")
    folder = Path(run)
    if not folder.is_dir():
        raise RunError(f"{shown(folder)}: no such run folder")
    signed = (folder / SIGNOFFS).exists()
    manifest = read_manifest(folder)
    if manifest is None or not isinstance(manifest.get("files"), dict):
        if not signed:
            raise RunError(f"{shown(folder / MANIFEST)}: missing or not a run manifest; {shown(folder)} is not a run "
                           "folder")
    elif manifest.get("format_version") != RUN_FORMAT and not signed:
        raise RunError(f"{shown(folder / MANIFEST)}: run format {manifest.get('format_version')!r} is not supported; "
                       f"expected {RUN_FORMAT}")
    pins = set(public_keys)
    files: dict[str, list[str]] = {}  # relative path -> what is wrong with it

    def wrong(relative: str, reason: str) -> None:
        files.setdefault(relative, []).append(reason)

    if manifest is None or not isinstance(manifest.get("files"), dict):
        wrong(MANIFEST, "missing or not a run manifest (no 'files' table)")
    else:
        for relative, expected in manifest["files"].items():
            reason = _file_problem(folder, str(relative), expected)
            if reason is not None:
                wrong(str(relative), reason)
    lines, records, record_problems = _read_lines(folder / SIGNOFFS) if signed else (0, [], {})
    current = {name: _hash_or_none(folder / name) for name in (FINDINGS, MANIFEST)}
    stale: dict[str, list[int]] = {}       # file -> records whose hash of it differs
    policies: dict[Path, tuple[str, list[tuple[int, str]]]] = {}  # policy file -> (as shown, [(record, sha256)])
    previous: str | None = GENESIS
    crypto = _crypto()
    for number, record in records:
        problems = record_problems.setdefault(number, [])
        if record is None:
            previous = None  # an unreadable line: the next record's link is not judged
            continue
        malformed = _malformed(record)
        if malformed:
            problems.append(malformed)
            previous = record_hash(record)
            continue
        changed = record["record_sha256"] != hashlib.sha256(_body(record)).hexdigest()
        if changed:
            problems.append("changed after it was written (its record_sha256 does not match its content)")
        if previous is not None and record["previous_sha256"] != previous:
            if previous == GENESIS:
                problems.append("chain broken: the first record does not start the chain (records before it "
                                "were removed)")
            else:
                problems.append(f"chain broken: its previous_sha256 does not match the record before it (line "
                                f"{_before(records, number)}); a record was removed, inserted or reordered")
        previous = None if changed else record_hash(record)  # a changed record explains the next link's break
        problems.extend(_signature_problems(record, pins, crypto))
        for name, field in ((FINDINGS, "findings_sha256"), (MANIFEST, "manifest_sha256")):
            if current[name] is not None and record[field] != current[name]:
                stale.setdefault(name, []).append(number)
        where = Path(policy) if policy is not None else \
            DEFAULT_POLICY if record["policy"]["source"] == "default" else Path(record["policy"]["source"])
        key = where.resolve() if where.exists() else where.absolute()
        policies.setdefault(key, (shown(where), []))[1].append((number, record["policy"]["sha256"]))
    for name, numbers in stale.items():
        wrong(name, f"differs from what sign-off {_numbered(numbers)} of {SIGNOFFS} signed (SHA-256)")
    for name in (FINDINGS, MANIFEST):
        if current[name] is None and records and name not in files:
            wrong(name, "missing")
    out = [f"{shown(folder / relative)}: {'; '.join(reasons)}"
           for relative, reasons in sorted(files.items(), key=lambda item: _order(item[0]))]
    for where, (named, signed_hashes) in policies.items():
        numbers = [n for n, _ in signed_hashes]
        if not where.is_file():
            out.append(f"policy {named}: missing; cannot check the policy that sign-off {_numbered(numbers)} "
                       "signed (give its present location)")
            continue
        now = sha256_file(where)
        changed_since = [n for n, digest in signed_hashes if digest != now]
        if changed_since:
            out.append(f"policy {named}: changed since sign-off {_numbered(changed_since)} signed it (SHA-256 differs)")
    for number in sorted(record_problems):
        if record_problems[number]:
            out.append(f"{shown(folder / SIGNOFFS)}: record {number}: {'; '.join(record_problems[number])}")
    return Verification(records=tuple(r for _, r in records if r is not None), lines=lines, problems=tuple(out))


def _order(relative: str) -> tuple[int, str]:
    return ({MANIFEST: 0, FINDINGS: 1}.get(relative, 2), relative)


def _numbered(numbers: list[int]) -> str:
    return f"record {numbers[0]}" if len(numbers) == 1 else f"records {', '.join(map(str, numbers))}"


def _before(records: list[tuple[int, dict | None]], number: int) -> int:
    earlier = [n for n, _ in records if n < number]
    return earlier[-1] if earlier else 0


def _hash_or_none(path: Path) -> str | None:
    try:
        return sha256_file(path) if path.is_file() else None
    except OSError:
        return None


def _file_problem(folder: Path, relative: str, expected) -> str | None:
    """What is wrong with a file the manifest lists, or None."""
    target = folder / relative
    try:
        real = target.resolve()
    except (OSError, RuntimeError) as exc:  # a loop of symbolic links
        return f"cannot be resolved ({exc})"
    if folder.resolve() not in real.parents:
        return f"leads out of the run folder (to {shown(real)})"
    if not target.is_file():
        return "missing"
    try:
        digest = sha256_file(target)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if digest != expected:
        return "changed since the audit wrote it (SHA-256 differs from manifest.json)"
    return None


def _read_lines(path: Path) -> tuple[int, list[tuple[int, dict | None]], dict[int, list[str]]]:
    """The lines of ``signoffs.jsonl``: how many, (line number, record or None), problems per line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return 1, [(1, None)], {1: [f"cannot be read ({exc.strerror or exc})"]}
    pieces = data.split(b"\n")
    if pieces and pieces[-1] == b"":
        pieces.pop()
    records: list[tuple[int, dict | None]] = []
    problems: dict[int, list[str]] = {}
    for number, piece in enumerate(pieces, 1):
        try:
            record = json.loads(piece.decode("utf-8")) if piece.strip() else None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems[number] = [f"not a JSON record ({exc})"]
            records.append((number, None))
            continue
        if piece.strip() and not isinstance(record, dict):
            problems[number] = ["not a JSON object"]
            record = None
        elif not piece.strip():
            problems[number] = ["an empty line where a record should be"]
        records.append((number, record))
    return len(pieces), records, problems


def _malformed(record: dict) -> str | None:
    for key, kind in _FIELDS.items():
        if key not in record:
            return f"malformed: no {key!r}"
        if not isinstance(record[key], kind) or isinstance(record[key], bool):
            return f"malformed: {key!r} is not a {kind.__name__}"
    if record["version"] != RECORD_VERSION:
        return f"malformed: version {record['version']} is not one this scrutiny reads ({RECORD_VERSION})"
    policy = record["policy"]
    if not isinstance(policy.get("source"), str) or not isinstance(policy.get("sha256"), str):
        return "malformed: 'policy' needs a source and a sha256"
    if record["role"] not in ROLES or record["decision"] not in DECISIONS:
        return f"malformed: role {record['role']!r} or decision {record['decision']!r} is not one scrutiny writes"
    if not _TIME.match(record["time"]):
        return f"malformed: time {record['time']!r} is not UTC ISO 8601 (YYYY-MM-DDTHH:MM:SSZ)"
    for key in ("findings_sha256", "manifest_sha256", "previous_sha256", "record_sha256"):
        if not _HEX.match(record[key]):
            return f"malformed: {key} is not a SHA-256"
    if ("signature" in record) != ("public_key" in record):
        return "malformed: a signature needs its public_key and a public_key its signature"
    return None


def _signature_problems(record: dict, pins: set[str], crypto) -> list[str]:
    if "signature" not in record:
        return ["not signed; a signature by one of the expected public keys is required"] if pins else []
    problems = []
    if pins and record["public_key"] not in pins:
        problems.append(f"signed by public key {record['public_key']}, which is not one of the expected keys")
    if crypto is None:
        return [*problems, f"signed, and the cryptography package that checks signatures is not installed: {_EXTRA}"]
    _, ed25519, invalid, _ = crypto
    try:
        key = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(record["public_key"], validate=True))
        key.verify(base64.b64decode(record["signature"], validate=True), _body(record))
    except (ValueError, TypeError, binascii.Error, invalid):
        problems.append("signature does not match the record and its public key")
    return problems
