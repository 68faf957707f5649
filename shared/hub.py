"""Published weights on the Hugging Face Hub: fetch through the hub client, verify sha256, record what was pushed.

A bundle's ``large_files.yml`` records each published file as a ``resolve`` URL pinned to the bundle version plus
its sha256 (written by ``python -m shared.publish``). Fetching goes through ``huggingface_hub.hf_hub_download``, so
tokens, the HF cache, ``HF_HUB_OFFLINE`` and mirrors via ``HF_ENDPOINT`` behave as HF users expect; the hub client
only checks sizes, so the sha256 is checked here and a file that fails it is deleted (from the cache too).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import urllib.request
from pathlib import Path

import yaml

from shared.data.integrity import recorded_sha256, sha256_file, verify_sha256, write_sha256

__all__ = [
    "weights_preset",
    "read_large_files",
    "published_entry",
    "fetch_published_file",
    "ensure_weights",
    "ensure_third_party_weights",
    "ensure_url_weights",
    "record_published_file",
    "trusted_sha256",
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
    """``large_files.yml``'s entry for ``relative_path`` with ``repo``, ``revision`` and ``filename`` (the file's path
    in the repo) parsed from its resolve URL."""
    for entry in read_large_files(bundle_root):
        if entry.get("path", "").lstrip("./") == relative_path:
            url = entry["url"]
            if "/resolve/" not in url:
                raise WeightsUnavailableError(f"{url} is not a Hugging Face resolve URL (…/<repo>/resolve/<rev>/<file>).")
            head, tail = url.split("/resolve/", 1)
            revision, filename = tail.split("/", 1)
            return {**entry, "repo": "/".join(head.rstrip("/").split("/")[-2:]), "revision": revision,
                    "filename": filename}
    raise WeightsUnavailableError(f"{relative_path} is not listed in {Path(bundle_root) / 'large_files.yml'}.")


def _drop_cached(path: str) -> None:
    """Delete a file from the HF cache: the snapshot link and the blob it points to."""
    real = os.path.realpath(path)
    for p in {path, real}:
        if os.path.lexists(p):
            os.remove(p)


def trusted_sha256(record: str | Path) -> dict[str, str]:
    """The sha256 of each file trusted on first use, ``{"<repo>@<revision>/<filename>": sha256}``."""
    record = Path(record)
    return json.loads(record.read_text()) if record.is_file() else {}


def _trust(record: Path, where: str, digest: str) -> None:
    trusted = trusted_sha256(record)
    trusted[where] = digest
    record.parent.mkdir(parents=True, exist_ok=True)
    partial = record.with_name(record.name + ".partial")
    partial.write_text(json.dumps(trusted, indent=2, sort_keys=True))
    partial.replace(record)


def _link_or_copy(source: str, destination: Path) -> None:
    """Put ``source`` at ``destination`` atomically: a hard link to the cached blob (no second copy of gigabytes of
    weights) where the file system allows it, else a copy."""
    partial = destination.with_name(destination.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        os.link(os.path.realpath(source), partial)
    except OSError:
        shutil.copyfile(source, partial)
    partial.replace(destination)


def fetch_published_file(
    repo: str,
    filename: str,
    revision: str,
    sha256: str,
    destination: str | Path,
    token: str | bool | None = None,
    trust_record: str | Path | None = None,
) -> Path:
    """Put ``filename`` of ``repo`` at ``revision`` in ``destination`` unless a file with ``sha256`` is already there.

    With no ``sha256`` (a third party's file whose hash nobody published), ``trust_record`` enables trust on first
    use: the first fetch's sha256 is recorded in that JSON file, and a later fetch of the same file and revision that
    differs is refused. Raises :class:`WeightsUnavailableError` with what went wrong (offline, unknown
    repo/revision/file, no access, sha256 mismatch); a file that fails its check is left neither in the destination
    nor in the HF cache.
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
    where = f"{repo}@{revision}/{filename}"
    first_use, source = False, "published"
    if not sha256:
        if trust_record is None:
            raise WeightsUnavailableError(
                f"no sha256 is recorded for {filename}: it has not been published yet (python -m shared.publish)."
            )
        sha256 = trusted_sha256(trust_record).get(where, "")
        first_use, source = not sha256, f"trusted (recorded in {trust_record})"
    if sha256 and destination.is_file() and sha256_file(destination) == sha256:
        return destination
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
    if first_use:
        _trust(Path(trust_record), where, actual)
        sha256 = actual
        logger.warning(
            f"{where}: no sha256 is published for this file; trusting this first download (sha256 {actual}, recorded "
            f"in {trust_record}: a later download that differs is refused). To pin it for everyone, set its "
            f"hash_val to {actual} in the bundle's large_files.yml."
        )
    if actual != sha256:
        _drop_cached(cached)
        raise WeightsUnavailableError(
            f"{where}: sha256 {actual} does not match the {source} {sha256}; the download was deleted. If the file "
            "was changed on purpose upstream, check it and pin the revision you trust."
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    _link_or_copy(cached, destination)
    write_sha256(destination, sha256)
    logger.info(f"fetched {where} (sha256 {'recorded' if first_use else 'verified'}) to {destination}")
    return destination


def ensure_weights(
    path: str,
    bundle_root: str,
    published_path: str = "models/model.pt",
    use_published: bool = False,
    repo: str | None = None,
    token: str | bool | None = None,
    train_config: str = "configs/train.json",
    revision: str | None = None,
    trust_on_first_use: bool = False,
) -> str:
    """The checkpoint a config should load, checked against the sha256 recorded beside it (or, for a file without
    one, the published sha256 in ``large_files.yml``, which is then recorded beside it): ``path`` if it exists,
    else (when ``use_published``) the file published as ``published_path`` in ``bundle_root/large_files.yml``,
    fetched from ``repo`` (default: the recorded one) and verified into ``path``; else a ``FileNotFoundError`` that
    says how to get weights (``train_config`` trains them). A file that fails its check raises
    ``shared.data.integrity.WeightsIntegrityError`` naming it. ``revision`` overrides the recorded one (a tag, branch
    or commit); ``trust_on_first_use`` accepts a file whose sha256 nobody published (a study's own weights), recording
    it in ``<folder of path>/trusted_sha256.json`` (see :func:`fetch_published_file`)."""
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
    revision = revision or entry["revision"]
    pinned = entry.get("hash_val", "") if revision == entry["revision"] else ""
    trust_record = None
    if trust_on_first_use:
        trust_record = os.path.join(os.path.dirname(os.path.abspath(path)), "trusted_sha256.json")
    fetch_published_file(repo or entry["repo"], entry["filename"], revision, pinned, path, token, trust_record)
    return path


def ensure_third_party_weights(
    repo: str,
    filename: str,
    path: str,
    revision: str = "main",
    md5: str | None = None,
    token: str | bool | None = None,
) -> str:
    """Another publisher's weights file (e.g. a MONAI model zoo bundle's ``models/model.pt`` on the hub) at ``path``:
    fetched once through the hub client (``HF_ENDPOINT``, the HF cache and offline mode as for our own weights),
    trusted on first use (its sha256 recorded in ``trusted_sha256.json`` beside ``path``; a later download of the same
    revision that differs is refused), and, when its publisher gave one, its ``md5`` compared and the result logged
    (a newer upload of the same file name differs from it without being damaged)."""
    record = Path(path).resolve().parent / "trusted_sha256.json"
    fetched = fetch_published_file(repo, filename, revision, "", path, token, record)
    if md5:
        digest = hashlib.md5()
        with open(fetched, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() == md5:
            logger.info(f"{repo}@{revision}/{filename}: md5 {md5}, the one its publisher gives")
        else:
            logger.warning(f"{repo}@{revision}/{filename}: md5 {digest.hexdigest()}, not the {md5} its publisher "
                           "gives for the weights described; a newer upload, or another file under the same name")
    return str(fetched)


def ensure_url_weights(url: str, hash_prefix: str | None = None, cache_dir: str | None = None,
                       timeout: float = 60.0) -> str:
    """A weights file published at a plain URL (not on the hub), such as the PyTorch FID Inception weights: fetched
    once into torch's hub cache (``<TORCH_HOME>/hub/checkpoints``, as ``torch.hub`` does; or ``cache_dir``) and
    checked against ``hash_prefix``, the start of its sha256 that such files carry in their name. A cached file that
    fails the check is refused (delete it to fetch again); a failed download names the URL and where to put the file
    by hand."""
    import torch

    folder = Path(cache_dir or Path(torch.hub.get_dir()) / "checkpoints")
    path = folder / os.path.basename(url.split("?")[0])
    if path.is_file():
        if hash_prefix and not sha256_file(path).startswith(hash_prefix):
            raise WeightsUnavailableError(f"{path}: its sha256 does not start with {hash_prefix}, as the file from "
                                          f"{url} must: it is damaged or another file; delete it to fetch it again.")
        return str(path)
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    try:  # torch.hub.download_url_to_file has no timeout: an unreachable host could hang the run
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as f:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                f.write(block)
    except Exception as e:
        partial.unlink(missing_ok=True)
        raise WeightsUnavailableError(f"{url}: cannot be fetched ({type(e).__name__}: {e}); connect, or put the file "
                                      f"at {path}.") from e
    if hash_prefix and not digest.hexdigest().startswith(hash_prefix):
        partial.unlink(missing_ok=True)
        raise WeightsUnavailableError(f"{url}: the download's sha256 {digest.hexdigest()} does not start with "
                                      f"{hash_prefix}; it was deleted.")
    os.replace(partial, path)
    logger.info(f"fetched {url} (sha256 starts with {hash_prefix or 'unchecked'}) to {path}")
    return str(path)


def record_published_file(bundle_root: str | Path, relative_path: str, url: str, sha256: str) -> None:
    """Set (or add) ``relative_path``'s URL and sha256 in ``large_files.yml``, keeping the other entries."""
    path = Path(bundle_root) / "large_files.yml"
    header = "".join(line for line in path.read_text().splitlines(True) if line.startswith("#")) if path.is_file() else ""
    entries = [e for e in read_large_files(bundle_root) if e.get("path", "").lstrip("./") != relative_path]
    entries.append({"path": relative_path, "url": url, "hash_val": sha256, "hash_type": "sha256"})
    entries.sort(key=lambda e: e["path"])
    path.write_text(header + yaml.safe_dump({"large_files": entries}, sort_keys=False))


def weights_preset(own_weights: str | Path, use_published: bool = False, own: str = "bundle",
                   fallback: str = "zoo") -> str:
    """``own`` where the bundle's own weights are there (``own_weights`` exists, or they are fetched from the
    published bundle), else ``fallback`` (e.g. the model zoo's weights, for a bundle that has not been trained)."""
    return own if use_published or os.path.isfile(own_weights) else fallback
