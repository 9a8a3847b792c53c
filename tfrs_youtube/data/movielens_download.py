"""Downloading the official MovieLens archives and checking that they are the ones GroupLens
published.

`download_movielens` fetches the official zip, checks its SHA-256 against `ARCHIVES` and its
members with `zipfile.testzip`, and extracts it. The data may not be redistributed, so nothing
here ships it; a zip fetched by hand on another machine is verified the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import urllib.request
import zipfile
from pathlib import Path

from tfrs_youtube.data.movielens_files import FILES_1M, FILES_100K


class ArchiveError(ValueError):
    """A MovieLens zip failed verification (checksum, integrity or expected members)."""


@dataclasses.dataclass(frozen=True)
class MovieLensArchive:
    """Where an official archive lives, its checksums and the members the loader needs."""

    url: str
    sha256: str
    md5: str  # as GroupLens publishes it (<url>.md5); kept for reference, SHA-256 is checked
    members: tuple[str, ...]


# MD5s: GroupLens' published <zip>.md5 files. SHA-256s: not published by GroupLens; these are the
# values pinned by independent public projects (e.g. TensorFlow's on-device recommendation example
# and keras-rs for ml-1m, several dataset loaders for ml-100k), and the ml-100k archive's u.data
# matches the SHA-256 those projects also record.
ARCHIVES = {
    "ml-100k": MovieLensArchive(
        url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        md5="0e33842e24a9c977be4e0107933c0723",
        members=(*FILES_100K, "u.genre"),
    ),
    "ml-1m": MovieLensArchive(
        url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        md5="c4d9eecfca2ab87c1945afe126590906",
        members=FILES_1M,
    ),
}


def _archive(name: str) -> MovieLensArchive:
    if name not in ARCHIVES:
        raise ValueError(f"unknown MovieLens archive {name!r}; expected one of {list(ARCHIVES)}")
    return ARCHIVES[name]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_archive(zip_path: str | os.PathLike, name: str) -> None:
    """Checks a downloaded zip: SHA-256 as pinned in `ARCHIVES`, CRCs, and the needed members."""
    archive, zip_path = _archive(name), Path(zip_path)
    actual = _sha256(zip_path)
    if actual != archive.sha256:
        raise ArchiveError(
            f"{zip_path}: SHA-256 {actual} does not match the expected {archive.sha256} for {name}"
        )
    try:
        with zipfile.ZipFile(zip_path) as zf:
            damaged = zf.testzip()
            names = set(zf.namelist())
    except zipfile.BadZipFile as err:
        raise ArchiveError(f"{zip_path}: not a valid zip archive ({err})") from err
    if damaged is not None:
        raise ArchiveError(f"{zip_path}: member {damaged!r} is damaged (CRC mismatch)")
    missing = [m for m in archive.members if f"{name}/{m}" not in names]
    if missing:
        raise ArchiveError(f"{zip_path}: missing members {[f'{name}/{m}' for m in missing]}")


def _fetch(url: str, destination: Path) -> None:
    """Downloads `url` to `destination` (tests replace this: the machine may be offline)."""
    with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as file:
        shutil.copyfileobj(response, file)


def _extract(zip_path: Path, name: str, target: Path) -> Path:
    # Extract only the dataset's own folder, into a scratch folder first, so that an interrupted
    # extraction never looks like a complete dataset; zipfile drops ".." and absolute paths.
    scratch = target / f".{name}.extracting"
    shutil.rmtree(scratch, ignore_errors=True)
    with zipfile.ZipFile(zip_path) as zf:
        for member in zf.namelist():
            if member.startswith(f"{name}/") and ".." not in Path(member).parts:
                zf.extract(member, scratch)
    final = target / name
    shutil.rmtree(final, ignore_errors=True)
    (scratch / name).replace(final)
    shutil.rmtree(scratch, ignore_errors=True)
    return final


def download_movielens(name: str, target_dir: str | os.PathLike) -> Path:
    """Downloads, verifies and extracts an official MovieLens zip; returns the extracted folder.

    Does nothing when `target_dir/<name>` already holds the dataset. A zip already at
    `target_dir/<name>.zip` (e.g. fetched by hand on an offline machine) is verified and used;
    a downloaded zip that fails verification is deleted.

    Args:
      name: "ml-100k" or "ml-1m".
      target_dir: where `<name>.zip` and the folder `<name>/` go.
    """
    archive, target = _archive(name), Path(target_dir)
    folder = target / name
    if all((folder / m).is_file() for m in archive.members):
        return folder
    target.mkdir(parents=True, exist_ok=True)
    zip_path = target / f"{name}.zip"
    if zip_path.exists():
        verify_archive(zip_path, name)
    else:
        partial = target / f"{name}.zip.part"
        try:
            _fetch(archive.url, partial)
        except OSError as err:  # urllib.error.URLError is an OSError
            partial.unlink(missing_ok=True)
            raise OSError(
                f"could not download {archive.url} ({err}); without internet, fetch it elsewhere and "
                f"put it at {zip_path}"
            ) from err
        try:
            verify_archive(partial, name)
        except ArchiveError:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(zip_path)
    return _extract(zip_path, name, target)
