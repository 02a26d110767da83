"""Safe loading and PHI: an untrusted checkpoint never runs code, and no patient identifier reaches any output."""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pydicom
import pytest
import torch
from monai.bundle import ConfigParser
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from torch.utils.tensorboard import SummaryWriter

from bundle.data.datalist import read_rejected
from bundle.engine.checkpoint import load_checkpoint
from bundle.networks.backbones import build_backbone, load_pretrained
from bundle.networks.initialisation import initialise_network
from bundle.networks.multihead import MultiHeadNet
from conftest import ROOT

# ---- safe loading: a crafted pickle is refused and its code never runs -------------------------------------------


class Payload:
    """Pickles to a call of ``exec``: unpickling it (``torch.load(weights_only=False)``) writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


@pytest.fixture
def crafted(tmp_path: Path) -> tuple[Path, Path]:
    """A checkpoint holding weights plus the payload, and the marker file the payload would write."""
    marker = tmp_path / "code_ran.txt"
    path = tmp_path / "crafted.pt"
    torch.save({"weight": torch.zeros(2), "payload": Payload(marker)}, path)
    return path, marker


def test_the_crafted_checkpoint_does_run_code_when_unpickled(crafted: tuple[Path, Path], tmp_path: Path) -> None:
    """The control: the payload is live, so the tests below would see it run if anything unpickled it."""
    path, marker = crafted
    torch.load(path, weights_only=False)
    assert marker.read_text() == "code ran"


def test_load_checkpoint_refuses_it_naming_the_file(crafted: tuple[Path, Path]) -> None:
    path, marker = crafted
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}: refused to load") as excinfo:
        load_checkpoint(path)
    assert "exec" in str(excinfo.value)  # torch names the global it refused
    assert not marker.exists()


def test_inference_checkpoint_refuses_it(crafted: tuple[Path, Path], tmp_path: Path) -> None:
    path, marker = crafted
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "inference.yaml"))
    parser.update({"backbone": "resnet10", "image_size": 64, "device": "cpu", "checkpoint": str(path)})
    parser.update({"input": str(tmp_path), "output_dir": str(tmp_path / "out")})
    with pytest.raises(ValueError, match="refused to load"):
        parser.get_parsed_content("runner").run()
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_training_resume_refuses_it(crafted: tuple[Path, Path], tiny_demo: Path, tmp_path: Path) -> None:
    path, marker = crafted
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(path, models / "checkpoint_last.pt")
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "train.yaml"))
    parser.update({"dataset_dir": str(tiny_demo), "ckpt_dir": str(models), "output_dir": str(tmp_path / "runs")})
    parser.update({"backbone": "resnet10", "image_size": 64, "num_workers": 0, "cache_rate": 0.0, "resume": True})
    parser.get_parsed_content("initialize")
    with pytest.raises(ValueError, match="checkpoint_last.pt: refused to load"):
        parser.get_parsed_content("train#trainer").run()
    assert not marker.exists()


def test_initial_weights_and_pretrained_backbones_refuse_it(crafted: tuple[Path, Path]) -> None:
    path, marker = crafted
    tasks = ConfigParser.load_config_file(ROOT / "configs" / "common.yaml")["tasks"]
    with pytest.raises(ValueError, match="refused to load"):
        initialise_network(MultiHeadNet("resnet10", tasks), checkpoint=str(path))
    backbone, _ = build_backbone("resnet10")
    with pytest.raises(Exception, match="Weights only load failed|refused to load"):
        load_pretrained(backbone, path)
    assert not marker.exists()


# ---- PHI: run the whole demo, then look for every synthetic identifier in every file it wrote ------------------------

PHI_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "OtherPatientIDs", "InstitutionName")


def identifiers(dicom_folders: list[Path]) -> set[str]:
    """Every identifying value written in the DICOMs, in the forms it could take in text."""
    found: set[str] = set()
    for folder in dicom_folders:
        for path in folder.glob("*.dcm"):
            header = pydicom.dcmread(path, stop_before_pixels=True)
            for keyword in PHI_KEYWORDS:
                value = str(header.get(keyword) or "").strip()
                if value:
                    found |= {value, value.replace("^", " ")}
                    if keyword == "PatientBirthDate" and len(value) == 8:  # also as an ISO date
                        found.add(f"{value[:4]}-{value[4:6]}-{value[6:]}")
    return found


def texts_of(path: Path) -> list[str]:
    """The readable contents of a file, decoded as Latin-1 so that no byte is lost.

    A zip (a torch checkpoint) gives its member names and members, except the tensor storages (``*/data/<n>``):
    they hold numbers, never text, and are most of the bytes. A PNG also gives its text chunks, which may be
    compressed; a gzip file its decompressed content.
    """
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            storages = [name for name in names if re.fullmatch(r".*/data/\d+", name)]
            return names + [archive.read(name).decode("latin-1") for name in names if name not in storages]
    raw = path.read_bytes()
    texts = [raw.decode("latin-1")]
    if raw.startswith(b"\x89PNG"):
        with Image.open(path) as image:
            texts += [f"{key}={value}" for key, value in image.text.items()]
    if raw.startswith(b"\x1f\x8b"):
        texts.append(gzip.decompress(raw).decode("latin-1"))
    return texts


def leaks(texts: list[str], needles: set[str]) -> set[str]:
    """The needles found in the texts; a date or number only where it stands alone (not inside a longer number)."""
    alternatives = "|".join(re.escape(needle) for needle in sorted(needles, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\d.])(?:{alternatives})(?!\d)")
    return {match.group() for text in texts for match in pattern.finditer(text)}


def test_demo_outputs_hold_no_patient_identifier(tiny_demo: Path, tmp_path: Path) -> None:
    """``scripts/demo.py --quick`` end to end, on a cut-down copy of the tiny synthetic set.

    The copy skips generation; with only the first 12 + 20 images kept, the sheets' other rows become rejected rows,
    so the rejected-rows reports are scanned with content too, and the run takes half the time.
    """
    data, out = tmp_path / "data", tmp_path / "out"
    shutil.copytree(tiny_demo, data)  # the demo prepares the datalists again, over the copies
    dicoms = [data / "AIforCOVID" / "imgs", data / "BRIXIA" / "dicom_clean"]
    for folder, kept in zip(dicoms, (12, 20), strict=True):
        for path in sorted(folder.glob("*.dcm"))[kept:]:
            path.unlink()
    completed = subprocess.run(
        [sys.executable, "scripts/demo.py", "--quick", "--data", str(data), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert len(read_rejected(data / "aiforcovid.rejected.csv")) == 12
    needles = identifiers(dicoms)
    n_images = sum(len(list(folder.glob("*.dcm"))) for folder in dicoms)
    assert len(needles) > 3 * n_images  # names, IDs, birth dates, accession numbers of every image
    assert leaks(texts_of(next(dicoms[0].glob("*.dcm"))), needles)  # the scan finds them where they are

    outputs = [path for path in out.rglob("*") if path.is_file()]
    outputs += [path for path in data.iterdir() if path.is_file()]  # datalists, rejected-rows reports, markers
    kinds = {path.suffix for path in outputs} | {"events" for path in outputs if "tfevents" in path.name}
    assert {".pt", ".csv", ".json", ".png", "events"} <= kinds, kinds  # every kind of output was made
    for path in outputs:
        assert not (found := leaks(texts_of(path), needles)), (path, found)
    assert not (found := leaks([completed.stdout, completed.stderr], needles)), found


def test_the_scan_finds_identifiers_in_every_kind_of_output(tmp_path: Path) -> None:
    """The scan above can fail: an identifier hidden in a checkpoint's pickle, a compressed PNG text chunk, a
    TensorBoard event or a gzip file is found, and a number that merely contains a birth date is not."""
    needles = {"SYNTH^X0001", "19510203"}
    torch.save({"weights": torch.zeros(3), "meta": {"patient": "SYNTH^X0001"}}, tmp_path / "leaky.pt")
    info = PngInfo()
    info.add_text("Comment", "born 19510203", zip=True)
    Image.new("L", (4, 4)).save(tmp_path / "leaky.png", pnginfo=info)
    with SummaryWriter(str(tmp_path / "events")) as writer:
        writer.add_text("note", "SYNTH^X0001")
    (tmp_path / "leaky.gz").write_bytes(gzip.compress(b"SYNTH^X0001"))
    events = next((tmp_path / "events").iterdir())
    for path in (tmp_path / "leaky.pt", tmp_path / "leaky.png", events, tmp_path / "leaky.gz"):
        assert leaks(texts_of(path), needles), path
    assert not leaks(["p = 0.195102031", "id 1195102034"], needles)
