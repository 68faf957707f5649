"""Published weights on the Hugging Face Hub: fetch through the hub client, verify sha256, record what was pushed.

A bundle's ``large_files.yml`` records each published file as a ``resolve`` URL pinned to the bundle version plus
its sha256 (written by ``python -m shared.publish``). Fetching goes through ``huggingface_hub.hf_hub_download``, so
tokens, the HF cache, ``HF_HUB_OFFLINE`` and mirrors via ``HF_ENDPOINT`` behave as HF users expect; the hub client
only checks sizes, so the sha256 is checked here and a file that fails it is deleted (from the cache too).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import yaml

from shared.data.integrity import recorded_sha256, sha256_file, verify_sha256, write_sha256

__all__ = [
    "read_large_files",
    "published_entry",
    "fetch_published_file",
    "ensure_weights",
    "record_published_file",
    "WeightsUnavailableError",
]

logger = logging.getLogger(__name__)


class WeightsUnavailableError(RuntimeError):
    """Published weights could not be fetched or failed verification."""


def read_large_files(bundle_root: str | Path) -> list[dict]:
    path = Path(bundle_root) / "large_files.yml"
    if not path.is_file():
        return []
    return list((yaml.safe_load(path.read_text()) or {}).get("large_files", []))


def published_entry(bundle_root: str | Path, relative_path: str) -> dict:
    """``large_files.yml``'s entry for ``relative_path`` with ``repo``, ``revision`` parsed from its resolve URL."""
    for entry in read_large_files(bundle_root):
        if entry.get("path", "").lstrip("./") == relative_path:
            url = entry["url"]
            if "/resolve/" not in url:
                raise WeightsUnavailableError(f"{url} is not a Hugging Face resolve URL (…/<repo>/resolve/<rev>/<file>).")
            head, tail = url.split("/resolve/", 1)
            return {**entry, "repo": "/".join(head.rstrip("/").split("/")[-2:]), "revision": tail.split("/", 1)[0]}
    raise WeightsUnavailableError(f"{relative_path} is not listed in {Path(bundle_root) / 'large_files.yml'}.")


def _drop_cached(path: str) -> None:
    """Delete a file from the HF cache: the snapshot link and the blob it points to."""
    real = os.path.realpath(path)
    for p in {path, real}:
        if os.path.lexists(p):
            os.remove(p)


def fetch_published_file(
    repo: str, filename: str, revision: str, sha256: str, destination: str | Path, token: str | bool | None = None
) -> Path:
    """Put ``filename`` of ``repo`` at ``revision`` in ``destination`` unless a file with ``sha256`` is already there.

    Raises :class:`WeightsUnavailableError` with what went wrong (offline, unknown repo/revision/file, no access,
    sha256 mismatch); a file that fails the sha256 check is not left in the destination or in the HF cache.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    destination = Path(destination)
    if not sha256:
        raise WeightsUnavailableError(
            f"no sha256 is recorded for {filename}: it has not been published yet (python -m shared.publish)."
        )
    if destination.is_file() and sha256_file(destination) == sha256:
        return destination
    where = f"{repo}@{revision}/{filename}"
    try:  # LocalEntryNotFoundError subclasses EntryNotFoundError: it must come first
        cached = hf_hub_download(repo_id=repo, filename=filename, revision=revision, token=token)
    except GatedRepoError as e:
        raise WeightsUnavailableError(f"{where}: access to this repository must be requested on the hub.") from e
    except RepositoryNotFoundError as e:
        raise WeightsUnavailableError(
            f"{where}: repository not found, or private and no valid token was given (set HF_TOKEN)."
        ) from e
    except RevisionNotFoundError as e:
        raise WeightsUnavailableError(f"{where}: version {revision!r} does not exist in {repo}.") from e
    except LocalEntryNotFoundError as e:
        raise WeightsUnavailableError(
            f"{where}: not in the local Hugging Face cache and the hub cannot be reached (offline, or "
            f"HF_HUB_OFFLINE=1). Connect, or copy the file to {destination}."
        ) from e
    except EntryNotFoundError as e:
        raise WeightsUnavailableError(f"{where}: no such file at version {revision!r}.") from e
    actual = sha256_file(cached)
    if actual != sha256:
        _drop_cached(cached)
        raise WeightsUnavailableError(
            f"{where}: sha256 {actual} does not match the published {sha256}; the download was deleted."
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    shutil.copyfile(cached, partial)
    partial.replace(destination)
    write_sha256(destination, sha256)
    logger.info(f"fetched {where} (sha256 verified) to {destination}")
    return destination


def ensure_weights(
    path: str,
    bundle_root: str,
    published_path: str = "models/model.pt",
    use_published: bool = False,
    repo: str | None = None,
    token: str | bool | None = None,
    train_config: str = "configs/train.json",
) -> str:
    """The checkpoint a config should load, checked against the sha256 recorded beside it (or, for a file without
    one, the published sha256 in ``large_files.yml``, which is then recorded beside it): ``path`` if it exists,
    else (when ``use_published``) the file published as ``published_path`` in ``bundle_root/large_files.yml``,
    fetched from ``repo`` (default: the recorded one) and verified into ``path``; else a ``FileNotFoundError`` that
    says how to get weights (``train_config`` trains them). A file that fails its check raises
    ``shared.data.integrity.WeightsIntegrityError`` naming it."""
    if os.path.isfile(path):
        if recorded_sha256(path) is None:  # e.g. fetched by `monai.bundle download_large_files`, which checked it
            published = next((e.get("hash_val") for e in read_large_files(bundle_root)
                              if e.get("path", "").lstrip("./") == published_path), None)
            if published and sha256_file(path) == published:
                write_sha256(path, published)
        verify_sha256(path)
        return path
    if not use_published:
        raise FileNotFoundError(
            f"{path} does not exist. Train the bundle first ({train_config}, run id training), or use the "
            f"published weights: add --use_published_weights True, or run "
            f"python -m monai.bundle download_large_files --bundle_path {bundle_root}"
        )
    entry = published_entry(bundle_root, published_path)
    fetch_published_file(repo or entry["repo"], published_path, entry["revision"], entry.get("hash_val", ""), path, token)
    return path


def record_published_file(bundle_root: str | Path, relative_path: str, url: str, sha256: str) -> None:
    """Set (or add) ``relative_path``'s URL and sha256 in ``large_files.yml``, keeping the other entries."""
    path = Path(bundle_root) / "large_files.yml"
    header = "".join(line for line in path.read_text().splitlines(True) if line.startswith("#")) if path.is_file() else ""
    entries = [e for e in read_large_files(bundle_root) if e.get("path", "").lstrip("./") != relative_path]
    entries.append({"path": relative_path, "url": url, "hash_val": sha256, "hash_type": "sha256"})
    entries.sort(key=lambda e: e["path"])
    path.write_text(header + yaml.safe_dump({"large_files": entries}, sort_keys=False))
