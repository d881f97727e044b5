"""Downloading the dataset files from their mirrors, verified before they are kept."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from tqdm import tqdm

from fmnist.errors import FmnistError
from fmnist.files import atomic_path
from fmnist.progress import bars

# The publisher's server first, then the copy in the dataset's GitHub repository.
MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)


def mirrors() -> list[str]:
    """The mirrors to try; $FMNIST_MIRRORS (comma-separated URLs) replaces the built-in list."""
    env = os.environ.get("FMNIST_MIRRORS")
    return [m.strip() for m in env.split(",") if m.strip()] if env else list(MIRRORS)


def sha256_of_gzip(path: Path) -> str:
    h = hashlib.sha256()
    with gzip.open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetch_once(url: str, dest: Path, timeout: float, progress: bool) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0) or None
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            desc=url.rsplit("/", 1)[-1],
            disable=not bars(quiet=not progress),
            leave=False,
        ) as bar:
            got = 0
            for chunk in iter(lambda: resp.read(1 << 16), b""):
                out.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
        if total is not None and got != total:
            raise OSError(f"connection dropped after {got} of {total} bytes")


def download(
    filename: str,
    dest_dir: Path,
    sha256: str,
    urls: list[str] | None = None,
    *,
    retries: int = 2,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Fetch `filename` (a .gz) into `dest_dir`, trying each mirror `retries` times.

    The file is written under a temporary name and renamed only once the SHA-256 of its
    decompressed content equals `sha256`, so the cache never holds a partial or wrong file.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / filename
    errors = []
    for base in urls if urls is not None else mirrors():
        url = base.rstrip("/") + "/" + filename
        for attempt in range(retries):
            try:
                with atomic_path(dest) as tmp:
                    _fetch_once(url, tmp, timeout, progress)
                    try:
                        digest = sha256_of_gzip(tmp)
                    except (OSError, EOFError, zlib.error) as e:
                        raise ValueError(f"not a valid gzip file ({e})") from None
                    if digest != sha256:
                        raise ValueError("checksum mismatch")
                return dest
            except ValueError as e:  # wrong bytes: a retry of the same mirror will not help
                errors.append(f"{url}: {e}")
                break
            except (OSError, urllib.error.URLError) as e:
                errors.append(f"{url}: {getattr(e, 'reason', e)}")
                with contextlib.suppress(Exception):
                    time.sleep(min(2.0, 0.5 * (attempt + 1)))
    raise FmnistError(f"could not download {filename} from any mirror ({'; '.join(errors[-2:])})")
