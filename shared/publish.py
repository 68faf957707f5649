"""Check, package and publish a bundle to the Hugging Face Hub (or as a model-zoo zip).

    python -m shared.publish bundles/<bundle> --repo <namespace>/<bundle> [--version V] [--dry-run | --zip out.zip]

The hub endpoint and token come from ``HF_ENDPOINT`` / ``HF_TOKEN`` (or the token stored by ``hf auth login``).
Steps: (1) check the bundle (metadata schema, version in the changelog, LICENSE and model card, ``verify_net_in_out``,
TorchScript export checked against eager at two input sizes); (2) build a clean copy that vendors the ``shared``
modules its configs import, so it needs only the packages its metadata lists; (3) write the model card, with the
metrics of ``eval/test_metrics.json`` when the evaluate config has produced them; (4) carry ``models/*.pt`` and each network
exported to ``models/<checkpoint>.ts`` (the inference config's ``export_networks``, default ``network_def`` ->
``models/model.pt``); (5) push with ``monai.bundle.push_to_hf_hub`` (tags: the version and
``latest_version``) or write a zip. Nothing is pushed when a check fails. After a successful push the source
bundle's ``large_files.yml`` records the pushed weights' URL, pinned to the version tag, and sha256.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import re
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from shared.hub import record_published_file, sha256_of

__all__ = ["check_bundle", "build_package", "shared_modules_used", "main"]

logger = logging.getLogger("shared.publish")
SHARED_ROOT = Path(__file__).resolve().parent
TRAINING_STATE = re.compile(r"^(last|checkpoint_.*)\.pt$")


class PublishError(RuntimeError):
    """A check failed; nothing was published."""


# --- vendoring ---------------------------------------------------------------------------------------------------
def _module_file(name: str) -> Path | None:
    """The source file of module ``name`` (``shared`` or ``shared.x.y``) of this package, if it exists."""
    base = SHARED_ROOT.joinpath(*name.split(".")[1:])
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if name != "shared" and base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _as_module(dotted: str) -> str | None:
    """The longest prefix of ``dotted`` (``shared.x.y.Name``) that is a module of the shared package."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        if _module_file(".".join(parts[:end])):
            return ".".join(parts[:end])
    return None


def shared_modules_used(config_texts: list[str]) -> set[str]:
    """Every ``shared`` module the configs reference, with what those import, and their parent packages."""
    pending = {m for t in config_texts for d in re.findall(r"\bshared(?:\.\w+)+", t) if (m := _as_module(d))}
    pending.add("shared")
    found: set[str] = set()
    while pending:
        name = pending.pop()
        if name in found:
            continue
        found.add(name)
        parts = name.split(".")
        pending.update(".".join(parts[:i]) for i in range(1, len(parts)))
        tree = ast.parse(_module_file(name).read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            pending.update(m for n in names if n.split(".")[0] == "shared" and (m := _as_module(n)))
    return found


# --- checks ------------------------------------------------------------------------------------------------------
def _networks(bundle: Path) -> dict[str, str]:
    """``{net_id: checkpoint}`` to export: the inference config's ``export_networks``, else the zoo default."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    return dict(parser.get("export_networks", {"network_def": "models/model.pt"}))


def _data_format(meta: dict, net_id: str) -> dict:
    """``network_def`` -> ``network_data_format``, ``vae_def`` -> ``vae_data_format``."""
    key = net_id[: -len("_def")] + "_data_format" if net_id.endswith("_def") else f"{net_id}_data_format"
    if key not in meta:
        raise PublishError(f"metadata has no {key} for network {net_id}")
    return meta[key]


def _first(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def _export_and_compare(bundle: Path, meta: dict, net_id: str, checkpoint: str, destination: Path) -> str:
    """Export ``net_id`` to TorchScript (scripted, else traced), compare with eager at two sizes; return how."""
    from monai.bundle import ConfigParser, ckpt_export

    config = bundle / "configs" / "inference.json"
    parser = ConfigParser()
    parser.read_config(str(config))
    parser["bundle_root"] = str(bundle)
    eager = parser.get_parsed_content(net_id)
    eager.load_state_dict(torch.load(bundle / checkpoint, map_location="cpu", weights_only=True))
    eager.eval()
    image = next(iter(_data_format(meta, net_id)["inputs"].values()))
    shapes = [
        [1, image["num_channels"], *(int(eval(str(s), {"n": n})) for s in image["spatial_shape"])] for n in (2, 3)
    ]
    common = dict(net_id=net_id, filepath=str(destination), ckpt_file=str(bundle / checkpoint),
                  meta_file=str(bundle / "configs" / "metadata.json"), config_file=str(config), bundle_root=str(bundle))
    try:
        ckpt_export(**common)
        how = "scripted"
    except Exception as e:
        logger.info(f"torch.jit.script of {net_id} failed ({type(e).__name__}); exporting by tracing")
        ckpt_export(**common, use_trace=True, input_shape=shapes[0])
        how = "traced"
    exported = torch.jit.load(str(destination))
    with torch.no_grad():
        for shape in shapes:
            x = torch.randn(shape)
            if not torch.allclose(_first(exported(x)), _first(eager(x)), atol=1e-4):
                raise PublishError(f"the {how} TorchScript {net_id} differs from eager at input {shape}")
    return how


def check_bundle(bundle: Path, version: str, schema_file: Path | None, export_dir: Path) -> list[str]:
    """Run every check, exporting each network to ``export_dir``; return what passed, raise
    :class:`PublishError` listing what failed."""
    from monai.bundle import verify_metadata, verify_net_in_out

    problems, passed = [], []
    for required in ("configs/metadata.json", "configs/inference.json", "LICENSE", "docs/README.md"):
        if not (bundle / required).is_file():
            problems.append(f"missing {required}")
    if problems:
        raise PublishError("; ".join(problems))
    networks = _networks(bundle)
    problems += [f"missing {ckpt}" for ckpt in networks.values() if not (bundle / ckpt).is_file()]
    if problems:
        raise PublishError("; ".join(problems))
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    if meta.get("version") != version:
        problems.append(f"metadata version is {meta.get('version')!r}, publishing {version!r}")
    if version not in meta.get("changelog", {}):
        problems.append(f"version {version} is not in the metadata changelog")
    checks = {
        "metadata schema": lambda: verify_metadata(
            meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(schema_file)),
        "verify_net_in_out": lambda: verify_net_in_out(
            net_id="network_def", meta_file=str(bundle / "configs" / "metadata.json"),
            config_file=str(bundle / "configs" / "inference.json"), bundle_root=str(bundle)),
    }
    export_dir.mkdir(parents=True, exist_ok=True)
    for net_id, ckpt in networks.items():
        target = export_dir / (Path(ckpt).stem + ".ts")
        checks[f"TorchScript export of {net_id}"] = (
            lambda n=net_id, c=ckpt, t=target: _export_and_compare(bundle, meta, n, c, t))
    for name, check in checks.items():
        try:
            result = check()
            passed.append(f"{name}" + (f" ({result})" if isinstance(result, str) else ""))
        except Exception as e:
            problems.append(f"{name}: {type(e).__name__}: {e}")
    if problems:
        raise PublishError("; ".join(problems))
    return passed


# --- packaging ---------------------------------------------------------------------------------------------------
def _model_card(bundle: Path) -> str:
    card = (bundle / "docs" / "README.md").read_text()
    metrics = bundle / "eval" / "test_metrics.json"
    if metrics.is_file():
        table = json.loads(metrics.read_text())
        rows = ["| | Dice | IoU | precision | recall |", "|---|---|---|---|---|"]
        for kind in ("classes", "regions"):
            for name, m in table.get(kind, {}).items():
                rows.append(f"| {name} | {m['dice']:.3f} | {m['iou']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} |")
        card += (f"\n## Metrics of the published weights\n\nMeasured by `configs/evaluate.json` on "
                 f"{table.get('num_cases', '?')} test case(s), micro-aggregated:\n\n" + "\n".join(rows) + "\n")
    per_case = bundle / "eval" / "per_patient_dice.json"
    if per_case.is_file():
        result = json.loads(per_case.read_text())
        card += (f"\n## Metrics of the published weights\n\nMeasured by `configs/evaluate.json`: mean Dice "
                 f"{result['mean_dice']:.3f} over {result['num_cases']} test patient(s) (micro Dice "
                 f"{result['micro_dice']:.3f}).\n")
    return card


def build_package(bundle: Path, staging: Path, version: str, repo: str, endpoint: str, export_dir: Path) -> Path:
    """A clean copy of ``bundle`` under ``staging/<name>`` with the shared code it imports and its weights."""
    target = staging / bundle.name
    target.mkdir(parents=True)
    for item in ("configs", "LICENSE", "large_files.yml"):
        src = bundle / item
        if src.is_dir():
            shutil.copytree(src, target / item)
        elif src.is_file():
            shutil.copy2(src, target / item)
    (target / "docs").mkdir()
    for doc in (bundle / "docs").iterdir():
        if doc.is_file() and doc.name != "README.md":
            shutil.copy2(doc, target / "docs" / doc.name)
    (target / "docs" / "README.md").write_text(_model_card(bundle))
    (target / "models").mkdir()
    for weights in sorted((bundle / "models").glob("*.pt")):
        if not TRAINING_STATE.match(weights.name):
            shutil.copy2(weights, target / "models" / weights.name)
    for exported in sorted(export_dir.glob("*.ts")):
        shutil.copy2(exported, target / "models" / exported.name)
    texts = [p.read_text() for p in (target / "configs").glob("*.json")]
    for module in sorted(shared_modules_used(texts)):
        src = _module_file(module)
        dst = target / src.relative_to(SHARED_ROOT.parent)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    for weights in sorted((target / "models").iterdir()):
        url = f"{endpoint.rstrip('/')}/{repo}/resolve/{version}/models/{weights.name}"
        record_published_file(target, f"models/{weights.name}", url, sha256_of(weights))
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shared.publish", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--repo", required=True, help="<namespace>/<name> on the hub")
    ap.add_argument("--version", help="default: the version in configs/metadata.json")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="check and build, push nothing")
    mode.add_argument("--zip", type=Path, help="write a model-zoo-ready zip instead of pushing")
    ap.add_argument("--public", action="store_true", help="create the hub repo public (default private)")
    ap.add_argument("--schema-file", type=Path, help="local copy of the metadata schema (default: download it)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    bundle = args.bundle.resolve()
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    version = args.version or meta["version"]
    import huggingface_hub.constants

    endpoint = huggingface_hub.constants.ENDPOINT
    with tempfile.TemporaryDirectory(prefix="publish_") as tmp:
        tmp_path = Path(tmp)
        schema = args.schema_file or tmp_path / Path(meta.get("schema", "schema.json")).name
        export_dir = tmp_path / "exported"
        try:
            passed = check_bundle(bundle, version, schema, export_dir)
        except PublishError as e:
            logger.error(f"not published, a check failed: {e}")
            return 1
        logger.info("checks passed: " + ", ".join(passed))
        package = build_package(bundle, tmp_path / "staging", version, args.repo, endpoint, export_dir)
        files = sorted(str(p.relative_to(package)) for p in package.rglob("*") if p.is_file())
        logger.info(f"package {package.name}: {len(files)} files: {files}")
        if args.dry_run:
            logger.info("dry run: nothing pushed")
            return 0
        if args.zip:
            archive = shutil.make_archive(str(args.zip.resolve().with_suffix("")), "zip", package.parent, package.name)
            logger.info(f"wrote {archive}")
            return 0
        import os

        from monai.bundle import push_to_hf_hub

        try:
            push_to_hf_hub(repo=args.repo, name=package.name, bundle_dir=str(package.parent),
                           token=os.environ.get("HF_TOKEN"), private=not args.public, version=version,
                           tag_as_latest_version=True)
        except Exception as e:  # the hub client's messages name the repo and status, never the token
            logger.error(f"push to {args.repo} failed: {type(e).__name__}: {e}")
            return 1
        for weights in sorted((package / "models").iterdir()):
            rel = f"models/{weights.name}"
            url = f"{endpoint.rstrip('/')}/{args.repo}/resolve/{version}/{rel}"
            record_published_file(bundle, rel, url, sha256_of(weights))
        logger.info(f"pushed {args.repo} at {version} (tagged latest_version); recorded in {bundle / 'large_files.yml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
