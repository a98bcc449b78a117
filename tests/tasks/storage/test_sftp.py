"""The SFTP destination against a real OpenSSH server on loopback (tests/fixtures/sshd.py), plus its settings.

The server runs as the test user on this machine, so what it wrote is read back straight from the folder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from pathlib import Path
from typing import Any

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from bulletin.errors import ConfigError, HostKeyError, StorageError, TransientError
from bulletin.settings import Settings
from tasks.storage import Destination, UriLink
from tasks.storage.sftp import SftpDestination, format_sftp_uri
from tasks.storage.ssh import SshConnection, key_fingerprint, load_private_key
from tests.fixtures import sshd as sshd_fixture
from tests.fixtures.sshd import SshdServer

KEY = "reports/acme/weekly/2026/11/02/rm-north/weekly-20261102T070005Z-abc123.csv"
META = {"report": "weekly", "recipient": "rm-north"}


def destination(server: SshdServer, directory: Path, **changes: Any) -> SftpDestination:
    values: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "username": server.username,
        "known_hosts": server.known_hosts,
        "private_key": load_private_key(server.private_key.read_text(), source="the test key"),
        "timeout_seconds": 10.0,
    }
    values.update(changes)
    return SftpDestination(SshConnection(**values), str(directory))


def sftp_settings(server: SshdServer, directory: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "sftp_host": server.host,
        "sftp_port": server.port,
        "sftp_username": server.username,
        "sftp_private_key_file": server.private_key,
        "sftp_known_hosts_file": server.known_hosts,
        "sftp_directory": str(directory),
    }
    values.update(overrides)
    return Settings(**values)


def everything_in(folder: Path) -> list[str]:
    """Every file and folder under ``folder``, dot-files included, as relative paths."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) if folder.exists() else []


@pytest.fixture
def drop(tmp_path: Path) -> Path:
    return tmp_path / "drop"


@pytest.fixture
def sftp(sshd_server: SshdServer, drop: Path) -> Any:
    with destination(sshd_server, drop) as dest:
        yield dest


@pytest.fixture
def report(tmp_path: Path) -> Path:
    path = tmp_path / "report.csv"
    path.write_bytes(b"region,total\nNorth,12\n" * 5000)
    return path


# --- storing -------------------------------------------------------------------------------------------------------


def test_put_stores_the_bytes_under_the_folder_and_reports_size_and_sha256(
    sftp: SftpDestination, sshd_server: SshdServer, drop: Path, report: Path
) -> None:
    stored = sftp.put(KEY, report, content_type="text/csv", metadata=META)
    landed = drop / KEY
    assert landed.read_bytes() == report.read_bytes()
    assert stored.sha256 == hashlib.sha256(landed.read_bytes()).hexdigest()
    assert stored.bytes == report.stat().st_size and stored.key == KEY
    assert stored.uri == f"sftp://{sshd_server.username}@127.0.0.1:{sshd_server.port}{drop}/{KEY}"


def test_put_makes_the_missing_folders_and_leaves_no_temporary_file(
    sftp: SftpDestination, drop: Path, report: Path
) -> None:
    assert not drop.exists(), "even the drop folder itself is made"
    sftp.put(KEY, report, content_type="text/csv", metadata=META)
    parents = [KEY.rsplit("/", n)[0] for n in range(KEY.count("/"), 0, -1)]
    assert everything_in(drop) == sorted([*parents, KEY]), "the folders and the file, and nothing else"


def test_a_second_put_of_the_same_key_never_overwrites_the_first(
    sftp: SftpDestination, drop: Path, report: Path, tmp_path: Path
) -> None:
    first = sftp.put(KEY, report, content_type="text/csv", metadata=META)
    other = tmp_path / "other.csv"
    other.write_bytes(b"something else\n")
    second = sftp.put(KEY, other, content_type="text/csv", metadata=META)
    assert (drop / KEY).read_bytes() == report.read_bytes(), "the first file is untouched"
    assert second.key == KEY.removesuffix(".csv") + "-1.csv" and second.uri != first.uri
    assert (drop / second.key).read_bytes() == b"something else\n"
    assert not [name for name in everything_in(drop) if name.rpartition("/")[2].startswith(".")]


def test_openssh_plain_rename_refuses_an_existing_target_and_posix_rename_would_overwrite(
    sshd_server: SshdServer, tmp_path: Path
) -> None:
    """What the destination relies on, checked on the real server: plain RENAME fails when the target exists."""
    (tmp_path / "target").write_bytes(b"first")
    (tmp_path / "upload").write_bytes(b"second")
    client = paramiko.SSHClient()
    client.get_host_keys().load(str(sshd_server.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        sshd_server.host,
        sshd_server.port,
        username=sshd_server.username,
        key_filename=str(sshd_server.private_key),
        allow_agent=False,
        look_for_keys=False,
    )
    try:
        session = client.open_sftp()
        with pytest.raises(OSError, match="Failure"):
            session.rename(str(tmp_path / "upload"), str(tmp_path / "target"))
        assert (tmp_path / "target").read_bytes() == b"first" and (tmp_path / "upload").exists()
        session.posix_rename(str(tmp_path / "upload"), str(tmp_path / "target"))  # the one this module never uses
        assert (tmp_path / "target").read_bytes() == b"second"
    finally:
        client.close()


class _WrongSize(type(Path())):  # type: ignore[misc]
    """A real file whose size, as stat reports it, is one byte more than what reading it gives."""

    def stat(self, *args: Any, **kwargs: Any) -> Any:
        real = super().stat(*args, **kwargs)
        return os.stat_result((*real[:6], real.st_size + 1, *real[7:]))


class _FailsMidway(type(Path())):  # type: ignore[misc]
    """A real file whose read fails after the first chunk, the second time it is opened (after its checksum)."""

    opened = 0

    def open(self, *args: Any, **kwargs: Any) -> Any:
        handle = super().open(*args, **kwargs)
        type(self).opened += 1
        if type(self).opened < 2:
            return handle

        class Broken:
            def __init__(self) -> None:
                self.calls = 0

            def read(self, size: int = -1) -> bytes:
                self.calls += 1
                if self.calls > 1:
                    raise OSError(5, "Input/output error")
                return bytes(handle.read(1024))

            def __enter__(self) -> Broken:
                return self

            def __exit__(self, *exc: object) -> None:
                handle.close()

        return Broken()


def test_a_failed_upload_leaves_neither_the_file_nor_a_temporary_one(
    sftp: SftpDestination, drop: Path, report: Path
) -> None:
    with pytest.raises(TransientError, match="has 110000 bytes, not 110001"):
        sftp.put(KEY, _WrongSize(report), content_type="text/csv", metadata=META)
    with pytest.raises(TransientError) as broken:
        sftp.put(KEY, _FailsMidway(report), content_type="text/csv", metadata=META)
    assert broken.value.retryable
    files = [name for name in everything_in(drop) if not (drop / name).is_dir()]
    assert files == [], "no file, no .part file"
    sftp.put(KEY, report, content_type="text/csv", metadata=META)  # the session is still usable
    assert (drop / KEY).read_bytes() == report.read_bytes()


# --- host keys and login ----------------------------------------------------------------------------------------------


def test_a_changed_host_key_is_refused_naming_the_host_and_nothing_is_written(
    sshd_server: SshdServer, drop: Path, report: Path
) -> None:
    with destination(sshd_server, drop, known_hosts=sshd_server.wrong_known_hosts) as dest:
        with pytest.raises(HostKeyError) as refused:
            dest.put(KEY, report, content_type="text/csv", metadata=META)
    error = refused.value
    assert "127.0.0.1" in str(error) and str(sshd_server.port) in str(error)
    assert error.fingerprint == sshd_server.host_key_fingerprint in str(error), "the key the server showed"
    assert (error.host, error.port) == ("127.0.0.1", sshd_server.port)
    assert not error.retryable and isinstance(error, ConfigError)
    assert not drop.exists()


def test_an_unknown_host_is_refused_never_added(
    sshd_server: SshdServer, drop: Path, report: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with destination(sshd_server, drop, known_hosts=empty) as dest:
        with pytest.raises(HostKeyError, match=r"\[127\.0\.0\.1\]:\d+ is not in BULLETIN_SFTP_KNOWN_HOSTS_FILE") as no:
            dest.put(KEY, report, content_type="text/csv", metadata=META)
    assert no.value.fingerprint == sshd_server.host_key_fingerprint in str(no.value)
    assert empty.read_text() == "", "never written to"
    assert not drop.exists()


def test_a_user_key_the_server_does_not_know_is_refused_as_permanent(
    sshd_server: SshdServer, drop: Path, report: Path
) -> None:
    stranger = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    with destination(sshd_server, drop, private_key=load_private_key(stranger.decode(), source="k")) as dest:
        with pytest.raises(ConfigError, match="refused the private key for user") as refused:
            dest.put(KEY, report, content_type="text/csv", metadata=META)
    assert not isinstance(refused.value, HostKeyError) and not refused.value.retryable
    assert not drop.exists()


def test_a_server_that_does_not_answer_is_a_transient_error(sshd_server: SshdServer, drop: Path, report: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with destination(sshd_server, drop, port=closed_port) as dest:
        with pytest.raises(TransientError, match="cannot connect to the SFTP server") as down:
            dest.put(KEY, report, content_type="text/csv", metadata=META)
    assert down.value.retryable


def test_private_keys_that_cannot_be_used_are_refused_without_echoing_them() -> None:
    encrypted = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.BestAvailableEncryption(b"a passphrase"),
    )
    for text in ("not a key at all", encrypted.decode()):
        with pytest.raises(ConfigError, match="the key file does not hold an unencrypted") as refused:
            load_private_key(text, source="the key file")
        assert text not in str(refused.value)
        assert not [line for line in text.splitlines()[1:-1] if line in str(refused.value)]


def test_no_key_material_reaches_the_logs_even_at_debug(
    sshd_server: SshdServer, drop: Path, report: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key_lines = [line for line in sshd_server.private_key.read_text().splitlines()[1:-1] if len(line) > 20]
    with caplog.at_level(logging.DEBUG):
        with destination(sshd_server, drop) as dest:
            dest.put(KEY, report, content_type="text/csv", metadata=META)
        with destination(sshd_server, drop, known_hosts=sshd_server.wrong_known_hosts) as dest:
            with pytest.raises(HostKeyError):
                dest.put(KEY, report, content_type="text/csv", metadata=META)
    assert caplog.records, "paramiko and Bulletin did log"
    assert key_lines and not [line for line in key_lines if line in caplog.text]


# --- the connection ------------------------------------------------------------------------------------------------


def test_one_connection_is_reused_and_reopened_once_when_it_dropped(
    sftp: SftpDestination, drop: Path, report: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sftp.put(KEY, report, content_type="text/csv", metadata=META)
    first = sftp.connection.client
    sftp.put("a/b.csv", report, content_type="text/csv", metadata=META)
    assert sftp.connection.client is first, "the same SSH connection"
    assert first is not None
    transport = first.get_transport()
    assert transport is not None
    transport.close()  # the server, a firewall or a NAT dropped it
    with caplog.at_level(logging.INFO, logger="tasks.storage.ssh"):
        sftp.put("a/c.csv", report, content_type="text/csv", metadata=META)
    assert sftp.connection.client is not first and (drop / "a" / "c.csv").exists()
    assert "connected to SFTP" in caplog.text, "a new connection"
    sftp.close()
    assert sftp.connection.client is None


def dropping_source(path: Path, dest: SftpDestination, drops: int) -> Path:
    """``path``, whose uploads (every open after the checksum's) cut the SSH connection midway, ``drops`` times."""
    left = {"drops": drops, "opened": 0}

    class Dropping(type(Path())):  # type: ignore[misc]
        def open(self, *args: Any, **kwargs: Any) -> Any:
            handle = super().open(*args, **kwargs)
            left["opened"] += 1
            if left["opened"] == 1 or left["drops"] == 0:
                return handle
            left["drops"] -= 1
            return _CutAfterFirstChunk(handle, dest)

    return Dropping(path)


class _CutAfterFirstChunk:
    def __init__(self, handle: Any, dest: SftpDestination) -> None:
        self.handle, self.dest, self.reads = handle, dest, 0

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        if self.reads == 2:
            client = self.dest.connection.client
            transport = client.get_transport() if client is not None else None
            assert transport is not None
            transport.close()  # the network drops the connection in the middle of the upload
        return bytes(self.handle.read(4096))

    def __enter__(self) -> _CutAfterFirstChunk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


def test_a_connection_dropped_mid_upload_is_reopened_once_and_the_partial_file_removed(
    sftp: SftpDestination, drop: Path, report: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="tasks.storage.ssh"):
        stored = sftp.put(KEY, dropping_source(report, sftp, drops=1), content_type="text/csv", metadata=META)
    assert "dropped; reconnecting once" in caplog.text
    assert stored.key == KEY and (drop / KEY).read_bytes() == report.read_bytes()
    files = [name for name in everything_in(drop) if not (drop / name).is_dir()]
    assert files == [KEY], "the first attempt's temporary file is removed once the connection is back"


def test_a_connection_that_drops_again_is_a_transient_error(sftp: SftpDestination, drop: Path, report: Path) -> None:
    with pytest.raises(TransientError, match="dropped while uploading") as dropped:
        sftp.put(KEY, dropping_source(report, sftp, drops=2), content_type="text/csv", metadata=META)
    assert dropped.value.retryable and not (drop / KEY).exists()
    sftp.put("next.csv", report, content_type="text/csv", metadata=META)  # the next upload reconnects and cleans up
    files = [name for name in everything_in(drop) if not (drop / name).is_dir()]
    assert files == ["next.csv"]


def test_the_sftp_destination_is_a_destination(sftp: SftpDestination) -> None:
    typed: Destination = sftp  # mypy checks the protocol; the name is the channel's
    assert typed.name == "sftp"


def test_without_sshd_the_fixture_skips_but_fails_in_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sshd_fixture, "SSHD", str(tmp_path / "no-sshd"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="install openssh-server"):
        sshd_fixture._require_sshd()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must install openssh-server"):
        sshd_fixture._require_sshd()


# --- links, delete, holds --------------------------------------------------------------------------------------------


def test_link_is_the_files_sftp_uri_and_never_expires(
    sftp: SftpDestination, sshd_server: SshdServer, report: Path
) -> None:
    stored = sftp.put(KEY, report, content_type="text/csv", metadata=META)
    for given in (stored, stored.uri):
        link = sftp.link(given, "weekly.csv", 3600)
        assert isinstance(link, UriLink) and link.url == stored.uri and link.expires_at is None
    assert link.url.startswith(f"sftp://{sshd_server.username}@127.0.0.1:{sshd_server.port}/")
    with pytest.raises(StorageError):
        sftp.link("s3://bucket/" + KEY, None, 3600)


def test_delete_removes_the_file_and_a_second_delete_is_fine(sftp: SftpDestination, drop: Path, report: Path) -> None:
    stored = sftp.put(KEY, report, content_type="text/csv", metadata=META)
    sftp.delete(stored.uri)
    assert not (drop / KEY).exists()
    sftp.delete(stored.uri)
    with pytest.raises(StorageError):
        sftp.delete(f"file://{drop}/{KEY}")


def test_holds_only_its_own_server_user_and_folder(sftp: SftpDestination, sshd_server: SshdServer, drop: Path) -> None:
    port, user = sshd_server.port, sshd_server.username
    assert sftp.holds(f"sftp://{user}@127.0.0.1:{port}{drop}/{KEY}")
    for uri in (
        f"sftp://{user}@127.0.0.1:{port + 1}{drop}/{KEY}",
        f"sftp://someone-else@127.0.0.1:{port}{drop}/{KEY}",
        f"sftp://{user}@10.0.0.1:{port}{drop}/{KEY}",
        f"sftp://{user}@127.0.0.1:{port}{drop}-other/{KEY}",
        f"sftp://{user}@127.0.0.1:{port}{drop}/../etc/passwd",
        f"sftp://{user}@127.0.0.1:{port}{drop}/a/%2e%2e/b.csv",
        f"sftp://{user}@127.0.0.1:{port}{drop}/{KEY}?x=1",
        f"s3://bucket/{KEY}",
        f"file://{drop}/{KEY}",
        "sftp://[::1",
    ):
        assert not sftp.holds(uri), uri


def test_uris_bracket_ipv6_hosts_and_quote_paths() -> None:
    assert format_sftp_uri("me", "::1", 2222, "/drop/a b.csv") == "sftp://me@[::1]:2222/drop/a%20b.csv"


def test_fingerprints_read_as_openssh_prints_them(sshd_server: SshdServer) -> None:
    public = paramiko.Ed25519Key.from_private_key_file(str(sshd_server.private_key))
    assert key_fingerprint(public) == public.fingerprint


# --- settings ---------------------------------------------------------------------------------------------------------


def test_from_settings_reads_the_key_file_and_delivers(sshd_server: SshdServer, drop: Path, report: Path) -> None:
    with SftpDestination.from_settings(sftp_settings(sshd_server, drop)) as dest:
        stored = dest.put(KEY, report, content_type="text/csv", metadata=META)
    assert (drop / stored.key).read_bytes() == report.read_bytes()


@pytest.mark.usefixtures("prefect_api")
def test_from_settings_reads_the_key_from_a_prefect_secret_block(
    sshd_server: SshdServer, drop: Path, report: Path
) -> None:
    from prefect.blocks.system import Secret

    Secret(value=sshd_server.private_key.read_text()).save("bulletin-test-sftp-key", overwrite=True)
    settings = sftp_settings(
        sshd_server, drop, sftp_private_key_file=None, sftp_private_key_block="bulletin-test-sftp-key"
    )
    with SftpDestination.from_settings(settings) as dest:
        dest.put(KEY, report, content_type="text/csv", metadata=META)
    assert (drop / KEY).exists()
    missing = sftp_settings(sshd_server, drop, sftp_private_key_file=None, sftp_private_key_block="no-such-block")
    with pytest.raises(ConfigError, match="cannot load the Prefect Secret block 'no-such-block'"):
        SftpDestination.from_settings(missing)


HOST = {"sftp_host": "sftp.example.com", "sftp_username": "reports", "sftp_directory": "/drop"}


def refused_settings(tmp_path: Path) -> list[tuple[dict[str, Any], str, str]]:
    known, key = tmp_path / "known_hosts", tmp_path / "id_ed25519"
    known.write_text("")
    key.write_text("")
    ok = {**HOST, "sftp_known_hosts_file": known, "sftp_private_key_file": key}
    return [
        ({**HOST, "sftp_private_key_file": key}, "BULLETIN_SFTP_KNOWN_HOSTS_FILE", "always verified"),
        ({**ok, "sftp_known_hosts_file": tmp_path / "nope"}, "BULLETIN_SFTP_KNOWN_HOSTS_FILE", "not a readable file"),
        ({**ok, "sftp_private_key_file": tmp_path / "nope"}, "BULLETIN_SFTP_PRIVATE_KEY_FILE", "not a readable file"),
        ({**ok, "sftp_private_key_file": tmp_path}, "BULLETIN_SFTP_PRIVATE_KEY_FILE", "not a readable file"),
        ({**ok, "sftp_private_key_block": "key"}, "BULLETIN_SFTP_PRIVATE_KEY_BLOCK", "only one of them"),
        ({**ok, "sftp_private_key_file": None}, "BULLETIN_SFTP_PRIVATE_KEY_FILE", "_PRIVATE_KEY_BLOCK must be set"),
        ({**ok, "sftp_port": 0}, "BULLETIN_SFTP_PORT", "greater than or equal to 1"),
        ({**ok, "sftp_port": 70_000}, "BULLETIN_SFTP_PORT", "less than or equal to 65535"),
        ({**ok, "sftp_directory": "drop"}, "BULLETIN_SFTP_DIRECTORY", "absolute folder without '..'"),
        ({**ok, "sftp_directory": "/drop/../etc"}, "BULLETIN_SFTP_DIRECTORY", "absolute folder without '..'"),
        ({**ok, "sftp_directory": None}, "BULLETIN_SFTP_DIRECTORY", "must be set"),
        ({**ok, "sftp_username": None}, "BULLETIN_SFTP_USERNAME", "must be set"),
        ({**ok, "sftp_host": "sftp://example.com"}, "BULLETIN_SFTP_HOST", "host name or IP address"),
        ({"sftp_known_hosts_file": known}, "BULLETIN_SFTP_KNOWN_HOSTS_FILE", "BULLETIN_SFTP_HOST is not"),
        ({"sftp_port": 2222}, "BULLETIN_SFTP_PORT", "BULLETIN_SFTP_HOST is not"),
    ]


@pytest.mark.parametrize("case", range(15))
def test_sftp_settings_that_cannot_work_are_refused_naming_them(case: int, tmp_path: Path) -> None:
    values, variable, phrase = refused_settings(tmp_path)[case]
    with pytest.raises(ConfigError) as refused:
        Settings(**values)
    message = str(refused.value)
    assert message.startswith(variable), message
    assert phrase in message, message
    assert "\n" not in message


def test_complete_sftp_settings_are_accepted(sshd_server: SshdServer, drop: Path) -> None:
    settings = sftp_settings(sshd_server, drop)
    assert settings.sftp_port == sshd_server.port and settings.sftp_timeout_seconds == 30.0
    assert Settings().sftp_host is None and Settings().sftp_port == 22
