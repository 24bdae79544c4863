"""What an operator restores after a disaster: the newest archive at a destination (restore_fleet
--latest, BACKUP_URL by default), and what is there (backup_fleet --list), in a directory and on S3
(moto's server)."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from sites.models import Site
from sites.services import site_delete
from tests.conftest import TEST_ACTOR


def run(command: str, *args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(command, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def three_backups(destination: str, make_site) -> list[str]:
    """Three archives, a site more in each → their URLs, oldest first."""
    urls = []
    for name in ("first", "second", "third"):
        make_site(name)
        out, _ = run("backup_fleet", "--to", destination, "--keep", "0")
        urls.append(out.strip().splitlines()[-1])
    return urls


def test_the_newest_archive_of_a_directory_is_restored_and_the_list_shows_all(make_site, tmp_path):
    destination = str(tmp_path / "backups")
    urls = three_backups(destination, make_site)

    out, err = run("backup_fleet", "--to", destination, "--list")
    listed = [line.split("\t") for line in out.splitlines()]
    assert [url for url, _ in listed] == urls
    assert [int(size) for _, size in listed] == [Path(url).stat().st_size for url in urls]
    assert err.strip() == f"3 archives at {destination}."
    assert len(list(Path(destination).iterdir())) == 3  # --list writes nothing

    site_delete(actor=TEST_ACTOR, site_id="third")
    out, err = run("restore_fleet", "--latest", destination, "--replace-existing")
    assert err.strip() == f"The newest archive at {destination} is {urls[-1]}."
    assert out.splitlines()[-1].endswith(f"from {urls[-1]}.")
    assert set(Site.objects.values_list("pk", flat=True)) == {"first", "second", "third"}


def test_latest_defaults_to_backup_url_and_says_when_there_is_nothing(make_site, settings, tmp_path):
    settings.BACKUP_URL = f"file://{tmp_path}/scheduled"
    with pytest.raises(CommandError, match="No fleet backup at"):
        run("restore_fleet", "--latest")
    urls = three_backups(settings.BACKUP_URL, make_site)
    site_delete(actor=TEST_ACTOR, site_id="second")
    _, err = run("restore_fleet", "--latest", "--replace-existing")
    assert urls[-1] in err and Site.objects.filter(pk="second").exists()


def test_without_an_archive_or_a_destination_it_says_what_to_pass(db, settings):
    settings.BACKUP_URL = ""
    with pytest.raises(CommandError, match="Name the archive to restore, or pass --latest"):
        run("restore_fleet")
    with pytest.raises(CommandError, match="--latest needs a destination"):
        run("restore_fleet", "--latest")
    with pytest.raises(CommandError, match="No destination"):
        run("backup_fleet", "--list")


def test_the_newest_archive_on_s3_is_found_and_restored(make_site, s3, settings, monkeypatch):
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    settings.AWS_S3_ENDPOINT_URL = s3.endpoint
    destination = s3.url("latest")
    urls = three_backups(destination, make_site)

    out, _ = run("backup_fleet", "--to", destination, "--list")
    assert [line.split("\t")[0] for line in out.splitlines()] == urls
    assert all(int(line.split("\t")[1]) > 0 for line in out.splitlines())

    site_delete(actor=TEST_ACTOR, site_id="first")
    _, err = run("restore_fleet", "--latest", destination, "--replace-existing")
    assert urls[-1] in err and Site.objects.filter(pk="first").exists()


def test_an_unreachable_s3_destination_is_a_clear_error(db, settings, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nothing")
    settings.AWS_S3_ENDPOINT_URL = "http://127.0.0.1:9"  # discard: nothing listens
    with pytest.raises(CommandError, match="Cannot list the archives at 's3://nowhere/x'"):
        run("restore_fleet", "--latest", "s3://nowhere/x")
