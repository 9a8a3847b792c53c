"""MovieLens archives (movielens_download): pinned checksums, verification, download and extraction."""

import tfrs_youtube  # noqa: F401  (first: sets TF_USE_LEGACY_KERAS before anything loads Keras)

import dataclasses
import hashlib
import shutil
import urllib.error
import zipfile
from pathlib import Path

import pytest

from tfrs_youtube.data import movielens_download
from tfrs_youtube.data.movielens import load_movielens
from tfrs_youtube.data.movielens_download import ArchiveError, download_movielens, verify_archive

from test_movielens import MINI_100K, MINI_1M  # noqa: E402  (the MovieLens-format fixtures)

# No network: a locally built zip stands in for the GroupLens download.


def _build_zip(path: Path, name: str, source: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for file in sorted(source.iterdir()):
            zf.write(file, f"{name}/{file.name}")
        for member, data in (extra or {}).items():
            zf.writestr(member, data)
    return path


def _pin(monkeypatch, name: str, zip_path: Path) -> None:
    """Pins the checksum of a locally built zip in place of the official one."""
    digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
    pinned = dataclasses.replace(movielens_download.ARCHIVES[name], sha256=digest)
    monkeypatch.setitem(movielens_download.ARCHIVES, name, pinned)


def test_official_checksums_are_pinned():
    for archive in movielens_download.ARCHIVES.values():
        assert len(archive.sha256) == 64 and int(archive.sha256, 16) >= 0
        assert archive.url.startswith("https://files.grouplens.org/datasets/movielens/")


def test_verify_archive_accepts_a_matching_zip_and_rejects_a_different_one(tmp_path, monkeypatch):
    good = _build_zip(tmp_path / "ml-100k.zip", "ml-100k", MINI_100K)
    with pytest.raises(ArchiveError, match="does not match the expected"):
        verify_archive(good, "ml-100k")  # the official checksum
    _pin(monkeypatch, "ml-100k", good)
    verify_archive(good, "ml-100k")
    with pytest.raises(ValueError, match="unknown MovieLens archive"):
        verify_archive(good, "ml-10m")


def test_verify_archive_detects_missing_members_damage_and_non_zips(tmp_path, monkeypatch):
    partial = tmp_path / "partial"
    shutil.copytree(MINI_100K, partial)
    (partial / "u.user").unlink()
    incomplete = _build_zip(tmp_path / "incomplete.zip", "ml-100k", partial)
    _pin(monkeypatch, "ml-100k", incomplete)
    with pytest.raises(ArchiveError, match="missing members.*u.user"):
        verify_archive(incomplete, "ml-100k")

    damaged = _build_zip(tmp_path / "damaged.zip", "ml-100k", MINI_100K)
    data = bytearray(damaged.read_bytes())
    data[data.index(b"Blue Harbor")] ^= 0x20  # inside a stored member: its CRC no longer matches
    damaged.write_bytes(bytes(data))
    _pin(monkeypatch, "ml-100k", damaged)
    with pytest.raises(ArchiveError, match="damaged"):
        verify_archive(damaged, "ml-100k")

    not_zip = tmp_path / "not.zip"
    not_zip.write_bytes(b"<html>503</html>")
    _pin(monkeypatch, "ml-100k", not_zip)
    with pytest.raises(ArchiveError, match="not a valid zip"):
        verify_archive(not_zip, "ml-100k")


def test_download_verifies_extracts_and_is_idempotent(tmp_path, monkeypatch):
    served = _build_zip(
        tmp_path / "served.zip", "ml-1m", MINI_1M, extra={"../escape.txt": b"x", "elsewhere/x.txt": b"x"}
    )
    _pin(monkeypatch, "ml-1m", served)
    fetched = []

    def fake_fetch(url, destination):
        fetched.append(url)
        shutil.copyfile(served, destination)

    monkeypatch.setattr(movielens_download, "_fetch", fake_fetch)
    target = tmp_path / "data"
    folder = download_movielens("ml-1m", target)
    assert folder == target / "ml-1m"
    assert fetched == [movielens_download.ARCHIVES["ml-1m"].url]
    assert load_movielens(folder).name == "ml-1m"
    # Only the dataset's own folder is extracted, nothing outside the target.
    assert sorted(p.name for p in target.iterdir()) == ["ml-1m", "ml-1m.zip"]
    assert not (tmp_path / "escape.txt").exists()
    assert download_movielens("ml-1m", target) == folder and len(fetched) == 1


def test_download_deletes_a_zip_that_fails_verification(tmp_path, monkeypatch):
    monkeypatch.setattr(movielens_download, "_fetch", lambda url, dest: Path(dest).write_bytes(b"truncated"))
    with pytest.raises(ArchiveError, match="SHA-256"):
        download_movielens("ml-100k", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_download_uses_a_zip_placed_by_hand_without_fetching(tmp_path, monkeypatch):
    placed = _build_zip(tmp_path / "ml-100k.zip", "ml-100k", MINI_100K)
    _pin(monkeypatch, "ml-100k", placed)
    monkeypatch.setattr(movielens_download, "_fetch", lambda url, dest: pytest.fail("must not download"))
    folder = download_movielens("ml-100k", tmp_path)
    assert load_movielens(folder).users.equals(load_movielens(MINI_100K).users)


def test_offline_download_says_where_to_put_the_zip(tmp_path, monkeypatch):
    def offline(url, destination):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(movielens_download, "_fetch", offline)
    with pytest.raises(OSError, match=r"put it at .*ml-100k\.zip"):
        download_movielens("ml-100k", tmp_path)
