"""Check, package and publish a bundle to the Hugging Face Hub (or as a model-zoo zip).

    python -m shared.publish bundles/<bundle> --repo <namespace>/<bundle> [--version V] [--dry-run | --zip out.zip]

The hub endpoint and token come from ``HF_ENDPOINT`` / ``HF_TOKEN`` (or the token stored by ``hf auth login``).
Steps: (1) check the bundle: metadata schema, version in the changelog, LICENSE and model card, every third-party package
the published code imports listed in the metadata, and for every
network the inference config exports (``export_networks``, default ``network_def`` -> ``models/model.pt``) its
input/output format against the metadata and a TorchScript export that must match eager at two input sizes;
(2) build a clean copy that runs without this repository: the bundle's ``scripts`` and the ``shared`` modules it
uses, vendored under ``<bundle>_scripts`` (a package name private to the bundle, so that two published bundles load
side by side in one process), the configs rewritten to that name, and ``shared/configs/multi_gpu_train.json`` added;
(3) write the model card, appending the metric tables (Markdown) that the inference config lists under
``model_card_metrics`` when the evaluate config has written them; (4) carry ``models/*.pt`` with their sha256
sidecars and each exported TorchScript file; (5) push with ``monai.bundle.push_to_hf_hub`` (tags: the version and
``latest_version``) or write a zip. Nothing is pushed when a check fails. After a push, the source bundle's
``large_files.yml`` records the pushed weights' URL, pinned to the version tag, and sha256.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch

from shared.data.integrity import sha256_file, write_sha256
from shared.hub import record_published_file

__all__ = ["check_bundle", "build_package", "private_package_name", "shared_modules_used", "imports_of", "main"]

logger = logging.getLogger("shared.publish")
SHARED_ROOT = Path(__file__).resolve().parent
MULTI_GPU_CONFIG = SHARED_ROOT / "configs" / "multi_gpu_train.json"
TRAINING_STATE = re.compile(r"^(last|checkpoint_.*|state_iteration=.*)\.pt$")
CONFIG_MODULE = re.compile(r"(?<![\w.])(scripts|shared)\.(?=[A-Za-z_])")
IMPORT_SHARED = re.compile(r"^(\s*(?:from|import)\s+)shared(?=[.\s])", re.MULTILINE)


class PublishError(RuntimeError):
    """A check failed; nothing was published."""


# --- the import closure ------------------------------------------------------------------------------------------
def imports_of(source: str, package: str | None = None) -> set[str]:
    """Absolute module names that ``source`` imports (``from a.b import c`` gives ``a.b`` and ``a.b.c``). Relative
    imports are resolved against ``package`` (the importing module's package) when it is given, else skipped."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                module = node.module
            elif package is not None:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                continue
            if module:
                names.add(module)
                names.update(f"{module}.{a.name}" for a in node.names)
    return names


def package_of(name: str, path: Path) -> str:
    """The package that relative imports in module ``name`` (source file ``path``) are resolved against."""
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


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
        if parts[0] == "shared" and _module_file(".".join(parts[:end])):
            return ".".join(parts[:end])
    return None


def shared_modules_used(config_texts: list[str], script_sources: list[str] = ()) -> set[str]:
    """Every ``shared`` module that the configs reference or the bundle's scripts import, with what those import,
    and their parent packages."""
    pending = {m for t in config_texts for d in re.findall(r"\bshared(?:\.\w+)+", t) if (m := _as_module(d))}
    pending |= {m for src in script_sources for n in imports_of(src) if (m := _as_module(n))}
    pending.add("shared")
    found: set[str] = set()
    while pending:
        name = pending.pop()
        if name in found:
            continue
        found.add(name)
        parts = name.split(".")
        pending.update(".".join(parts[:i]) for i in range(1, len(parts)))
        path = _module_file(name)
        pending.update(m for n in imports_of(path.read_text(), package_of(name, path)) if (m := _as_module(n)))
    return found


def private_package_name(bundle: Path) -> str:
    """The import name of a published bundle's code: its ``scripts`` and the vendored ``shared`` modules."""
    return f"{bundle.name}_scripts"


def _rewrite_config(text: str, package: str) -> str:
    return CONFIG_MODULE.sub(lambda m: f"{package}." if m.group(1) == "scripts" else f"{package}.shared.", text)


def _rewrite_imports(source: str, package: str) -> str:
    return IMPORT_SHARED.sub(rf"\1{package}.shared", source)


# --- checks ------------------------------------------------------------------------------------------------------
def _inference_parser(bundle: Path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    return parser


def _networks(bundle: Path) -> dict[str, str]:
    """``{net_id: checkpoint}`` to export: the inference config's ``export_networks``, else the zoo default."""
    parser = _inference_parser(bundle)
    if "export_networks" not in parser:
        return {"network_def": "models/model.pt"}
    return dict(parser.get_parsed_content("export_networks"))


def _data_format(meta: dict, net_id: str) -> dict:
    """``network_def`` -> ``network_data_format``, ``vae_def`` -> ``vae_data_format``."""
    key = net_id[: -len("_def")] + "_data_format" if net_id.endswith("_def") else f"{net_id}_data_format"
    if key not in meta:
        raise PublishError(f"metadata has no {key} for network {net_id}")
    return meta[key]


def _first(output):
    """A network's first output: of a tuple / list, or of a dict (e.g. HoVer-Net's branches), its first value."""
    if isinstance(output, Mapping):
        return next(iter(output.values()))
    return output[0] if isinstance(output, (tuple, list)) else output


def _named_outputs(output, names: list[str]) -> dict:
    """``{name: tensor}`` for the metadata's outputs: a dict network's entries by name, else its first output."""
    if isinstance(output, Mapping):
        missing = [n for n in names if n not in output]
        if missing:
            raise PublishError(f"the network gives outputs {sorted(output)}; the metadata names {missing} too")
        return {n: output[n] for n in names}
    return {names[0]: _first(output)}


def _fake_inputs(data_format: dict) -> tuple[list[list[int]], torch.dtype]:
    image = next(iter(data_format["inputs"].values()))
    shapes = [[1, image["num_channels"], *(int(eval(str(s), {"n": n})) for s in image["spatial_shape"])]
              for n in (2, 3)]
    return shapes, getattr(torch, image.get("dtype", "float32"))


def _check_in_out(bundle: Path, meta: dict, net_id: str) -> str:
    """The network's output channels and dtype for inputs of its metadata format (its first output, for networks
    that return a tuple, which ``monai.bundle.verify_net_in_out`` cannot check; that check runs too otherwise)."""
    from monai.bundle import verify_net_in_out

    data_format = _data_format(meta, net_id)
    shapes, dtype = _fake_inputs(data_format)
    network = _inference_parser(bundle).get_parsed_content(net_id).eval()
    with torch.no_grad():
        raw = network(torch.rand(shapes[0], dtype=dtype))
    for name, out in _named_outputs(raw, list(data_format["outputs"])).items():
        output = data_format["outputs"][name]
        if out.shape[1] != output["num_channels"] or str(out.dtype) != f"torch.{output.get('dtype', 'float32')}":
            raise PublishError(f"{net_id} gives {out.shape[1]} {out.dtype} channel(s) as {name}, the metadata says "
                               f"{output['num_channels']} {output.get('dtype', 'float32')}")
    if net_id == "network_def" and not isinstance(raw, (tuple, list, Mapping)):
        verify_net_in_out(net_id=net_id, meta_file=str(bundle / "configs" / "metadata.json"),
                          config_file=str(bundle / "configs" / "inference.json"), bundle_root=str(bundle))
        return "monai.bundle.verify_net_in_out"
    return "output channels and dtype as in the metadata"


def _export_and_compare(bundle: Path, meta: dict, net_id: str, checkpoint: str, destination: Path) -> str:
    """Export ``net_id`` to TorchScript (scripted, else traced), compare with eager at two sizes; return how."""
    from monai.bundle import ckpt_export

    config = bundle / "configs" / "inference.json"
    eager = _inference_parser(bundle).get_parsed_content(net_id)
    eager.load_state_dict(torch.load(bundle / checkpoint, map_location="cpu", weights_only=True))
    eager.eval()
    shapes, dtype = _fake_inputs(_data_format(meta, net_id))
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
            x = torch.randn(shape).to(dtype)
            names = list(_data_format(meta, net_id)["outputs"])
            ours, theirs = _named_outputs(exported(x), names), _named_outputs(eager(x), names)
            if not all(torch.allclose(ours[n], theirs[n], atol=1e-4) for n in names):
                raise PublishError(f"the {how} TorchScript {net_id} differs from eager at input {shape}")
    return how


def _export_onnx_and_compare(bundle: Path, meta: dict, net_id: str, checkpoint: str, destination: Path) -> str:
    """Export ``net_id`` to ONNX (batch and spatial axes dynamic) and compare ONNX Runtime with eager at the two
    metadata sizes; an exporter or runtime that is missing, or a graph that does not generalise across sizes, skips
    the ONNX file (it is an extra beside the TorchScript one) and says why."""
    try:
        from shared.inferers.onnx_runtime import export_onnx, onnx_session
    except ImportError as e:  # pragma: no cover - onnxruntime is in requirements.txt
        return f"skipped: {e}"
    eager = _inference_parser(bundle).get_parsed_content(net_id)
    eager.load_state_dict(torch.load(bundle / checkpoint, map_location="cpu", weights_only=True))
    eager.eval()
    shapes, dtype = _fake_inputs(_data_format(meta, net_id))
    names = list(_data_format(meta, net_id)["outputs"])
    try:
        _, rebuild = export_onnx(eager, torch.randn(shapes[0]).to(dtype), destination, dynamic_spatial=True)
        session = onnx_session(destination)
        with torch.no_grad():
            for shape in shapes:
                x = torch.randn(shape).to(dtype)
                ours = _named_outputs(rebuild([torch.from_numpy(o) for o in session.run(None, {"input": x.numpy()})]),
                                      names)
                theirs = _named_outputs(eager(x), names)
                if not all(torch.allclose(ours[n], theirs[n], rtol=1e-3, atol=1e-4) for n in names):
                    raise PublishError(f"ONNX Runtime differs from eager at input {shape}")
    except Exception as e:  # noqa: BLE001 - the TorchScript export is the one the bundle needs
        destination.unlink(missing_ok=True)
        logger.info(f"no ONNX file for {net_id}: {type(e).__name__}: {e}")
        return f"skipped: {type(e).__name__}: {e}"[:300]
    return "ONNX Runtime matches eager at two sizes"


def _normalise(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _check_required_packages(bundle: Path, meta: dict) -> str:
    """Every third-party package the published copy imports is listed in the metadata's
    ``required_packages_version`` (MONAI, PyTorch, NumPy and PyTorch's own dependencies come with ``pip install
    monai``)."""
    from importlib.metadata import packages_distributions, requires

    scripts = sorted((bundle / "scripts").rglob("*.py")) if (bundle / "scripts").is_dir() else []
    configs = [c.read_text() for c in sorted((bundle / "configs").glob("*.json"))] + [MULTI_GPU_CONFIG.read_text()]
    sources = [p.read_text() for p in scripts]
    sources += [_module_file(m).read_text() for m in shared_modules_used(configs, sources)]
    names = {n.split(".")[0] for src in sources for n in imports_of(src)}
    names -= set(sys.stdlib_module_names) | {"shared", "__future__"}
    comes_with_monai = {"monai", "torch", "numpy"} | {
        _normalise(re.split(r"[<>=!;\[ ]", r)[0]) for r in requires("torch") or [] if "extra ==" not in r}
    listed = {_normalise(k) for k in meta.get("required_packages_version", {})} | comes_with_monai
    distributions = packages_distributions()
    missing = sorted({d for n in names for d in distributions.get(n, [n]) if _normalise(d) not in listed})
    if missing:
        raise PublishError(f"the published code imports {missing}, which configs/metadata.json's "
                           f"required_packages_version does not list")
    return f"{len(names)} third-party packages, all listed"


def _verify_schema(meta_file: Path, schema_file: Path | None, meta: dict) -> None:
    from monai.bundle import verify_metadata

    if schema_file is None or not schema_file.is_file():
        url = meta.get("schema", "")
        target = schema_file or Path(tempfile.mkdtemp()) / Path(url).name
        try:
            verify_metadata(meta_file=str(meta_file), filepath=str(target))
        except Exception as e:
            if target.is_file():
                raise
            raise PublishError(f"could not fetch the metadata schema {url} ({type(e).__name__}: {e}); "
                               f"offline, pass a local copy with --schema-file") from e
        return
    verify_metadata(meta_file=str(meta_file), filepath=str(schema_file))


def check_bundle(bundle: Path, version: str, schema_file: Path | None, export_dir: Path) -> list[str]:
    """Run every check, exporting each network to ``export_dir``; return what passed, raise
    :class:`PublishError` listing what failed."""
    problems, passed = [], []
    for required in ("configs/metadata.json", "configs/inference.json", "LICENSE", "docs/README.md"):
        if not (bundle / required).is_file():
            problems.append(f"missing {required}")
    if problems:
        raise PublishError("; ".join(problems))
    if str(bundle) not in sys.path:  # the configs reach the bundle's own code as `scripts.*`, as `run` does
        sys.path.insert(1, str(bundle))
    networks = _networks(bundle)
    problems += [f"missing {ckpt}" for ckpt in networks.values() if not (bundle / ckpt).is_file()]
    if problems:
        raise PublishError("; ".join(problems))
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    if meta.get("version") != version:
        problems.append(f"metadata version is {meta.get('version')!r}, publishing {version!r}")
    if version not in meta.get("changelog", {}):
        problems.append(f"version {version} is not in the metadata changelog")
    checks = {"metadata schema": lambda: _verify_schema(bundle / "configs" / "metadata.json", schema_file, meta),
              "required packages": lambda: _check_required_packages(bundle, meta)}
    export_dir.mkdir(parents=True, exist_ok=True)
    for net_id, ckpt in networks.items():
        checks[f"input/output of {net_id}"] = lambda n=net_id: _check_in_out(bundle, meta, n)
        target = export_dir / (Path(ckpt).stem + ".ts")
        checks[f"TorchScript export of {net_id}"] = (
            lambda n=net_id, c=ckpt, t=target: _export_and_compare(bundle, meta, n, c, t))
        checks[f"ONNX export of {net_id}"] = (
            lambda n=net_id, c=ckpt, t=target.with_suffix(".onnx"): _export_onnx_and_compare(bundle, meta, n, c, t))
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
    """The bundle's model card, with the metric tables its evaluate config wrote (``model_card_metrics``)."""
    card = (bundle / "docs" / "README.md").read_text()
    tables = [(bundle / p).read_text().strip() for p in _inference_parser(bundle).get("model_card_metrics", [])
              if (bundle / p).is_file()]
    if tables:
        card += "\n## Metrics of the published weights\n\n" + "\n\n".join(tables) + "\n"
    return card


def _copy_package_sources(source_root: Path, target_root: Path, files: list[Path], package: str) -> None:
    for src in files:
        dst = target_root / src.relative_to(source_root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(_rewrite_imports(src.read_text(), package))


def build_package(bundle: Path, staging: Path, version: str, repo: str, export_dir: Path) -> Path:
    """A clean copy of ``bundle`` under ``staging/<name>`` with its code, the shared code it uses and its weights."""
    from huggingface_hub import hf_hub_url

    target = staging / bundle.name
    package = private_package_name(bundle)
    (target / "configs").mkdir(parents=True)
    configs = sorted((bundle / "configs").iterdir()) + [MULTI_GPU_CONFIG]
    for config in configs:
        if config.is_file():
            text = config.read_text()
            (target / "configs" / config.name).write_text(
                text if config.suffix != ".json" or config.name == "metadata.json" else _rewrite_config(text, package))
    for item in ("LICENSE", "large_files.yml"):
        if (bundle / item).is_file():
            shutil.copy2(bundle / item, target / item)
    (target / "docs").mkdir()
    for doc in (bundle / "docs").iterdir():
        if doc.is_file() and doc.name != "README.md":
            shutil.copy2(doc, target / "docs" / doc.name)
    (target / "docs" / "README.md").write_text(_model_card(bundle))

    scripts = sorted((bundle / "scripts").rglob("*.py")) if (bundle / "scripts").is_dir() else []
    _copy_package_sources(bundle / "scripts", target / package, scripts, package)
    (target / package / "__init__.py").touch()
    modules = shared_modules_used([c.read_text() for c in configs if c.suffix == ".json"],
                                  [p.read_text() for p in scripts])
    _copy_package_sources(SHARED_ROOT, target / package / "shared", [_module_file(m) for m in sorted(modules)], package)

    (target / "models").mkdir()
    for weights in sorted((bundle / "models").glob("*.pt")):
        if not TRAINING_STATE.match(weights.name):
            shutil.copy2(weights, target / "models" / weights.name)
    for exported in sorted([*export_dir.glob("*.ts"), *export_dir.glob("*.onnx")]):
        shutil.copy2(exported, target / "models" / exported.name)
    for weights in sorted((target / "models").iterdir()):
        digest = write_sha256(weights)
        url = hf_hub_url(repo, f"models/{weights.name}", revision=version)
        record_published_file(target, f"models/{weights.name}", url, digest)
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
    with tempfile.TemporaryDirectory(prefix="publish_") as tmp:
        tmp_path = Path(tmp)
        export_dir = tmp_path / "exported"
        try:
            passed = check_bundle(bundle, version, args.schema_file, export_dir)
        except PublishError as e:
            logger.error(f"not published, a check failed: {e}")
            return 1
        logger.info("checks passed: " + ", ".join(passed))
        package = build_package(bundle, tmp_path / "staging", version, args.repo, export_dir)
        files = sorted(str(p.relative_to(package)) for p in package.rglob("*") if p.is_file())
        logger.info(f"package {package.name}: {len(files)} files: {files}")
        if args.dry_run:
            logger.info("dry run: nothing pushed")
            return 0
        if args.zip:
            archive = shutil.make_archive(str(args.zip.resolve().with_suffix("")), "zip", package.parent, package.name)
            logger.info(f"wrote {archive}")
            return 0
        from huggingface_hub import hf_hub_url
        from monai.bundle import push_to_hf_hub

        try:
            push_to_hf_hub(repo=args.repo, name=package.name, bundle_dir=str(package.parent),
                           token=os.environ.get("HF_TOKEN"), private=not args.public, version=version,
                           tag_as_latest_version=True)
        except Exception as e:  # the hub client's messages name the repo and status, never the token
            logger.error(f"push to {args.repo} failed: {type(e).__name__}: {e}")
            return 1
        for weights in sorted(w for w in (package / "models").iterdir() if w.suffix in (".pt", ".ts", ".onnx")):
            rel = f"models/{weights.name}"
            record_published_file(bundle, rel, hf_hub_url(args.repo, rel, revision=version), sha256_file(weights))
        logger.info(f"pushed {args.repo} at {version} (tagged latest_version); recorded in {bundle / 'large_files.yml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
