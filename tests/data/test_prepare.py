"""`python -m jaxseg.cli.prepare` end to end against a loopback HTTP server that serves small
archives built in the official layouts (tests/helpers/mirror.py): download, resume, checksums,
corrupt archives, no network, a full disk, bad roots, and re-running after success."""

import dataclasses
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxseg.cli import prepare as prepare_cli
from jaxseg.data import get_dataset, prepare
from tests.helpers import paths
from tests.helpers.cli import one_line_error, run_cli
from tests.helpers.mirror import CAMVID_PREPARED_LABEL, IMAGE, Server, all_archives


@pytest.fixture
def server():
    served = Server(all_archives())
    yield served
    served.close()


def run_main(*argv):
    return run_cli(prepare_cli.main, *argv)


def test_camvid_downloads_arranges_and_a_rerun_does_nothing(server, tmp_path, capsys):
    assert run_main("camvid", "--root", tmp_path, "--download", "--verify",
                    "--mirror", server.url) == 0
    dataset = get_dataset(f"camvid:{tmp_path / 'camvid'}", "val")
    assert len(dataset) == 2
    # at the published figures' 240x180: labels by nearest neighbour, images by Lanczos
    label = np.asarray(dataset[0]["label"])
    np.testing.assert_array_equal(label, np.where(CAMVID_PREPARED_LABEL == 11, 255,
                                                  CAMVID_PREPARED_LABEL))
    image = np.asarray(dataset[0]["image"])
    assert image.shape == (180, 240, 3) and prepare.CAMVID_SIZE == (240, 180)
    np.testing.assert_allclose(image[7::15, 7::15], IMAGE, atol=1)  # block centres keep their colour
    assert len(get_dataset(f"camvid:{tmp_path / 'camvid'}", "train")) == 3
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []  # no work folder left
    count = len(server.requests)
    assert run_main("camvid", "--root", tmp_path, "--download", "--mirror", server.url) == 0
    assert len(server.requests) == count and "already prepared" in capsys.readouterr().out


def test_voc_checks_the_published_md5(server, tmp_path, capsys, monkeypatch):
    code = run_main("voc", "--root", tmp_path, "--download", "--mirror", server.url)
    one_line_error(capsys, code, "does not match the published 6cd6e144f989b92b3379bac3b3de84fd")
    assert not (tmp_path / "VOCdevkit").exists()  # nothing where get_dataset would read
    assert (tmp_path / "downloads" / "VOCtrainval_11-May-2012.tar.corrupt").exists()
    # The archive this test built, with its own MD5 standing in for the published one:
    md5 = hashlib.md5(server.files["VOCtrainval_11-May-2012.tar"]).hexdigest()
    voc = prepare.SOURCES["voc"]
    archive = dataclasses.replace(voc.archives[0], md5=md5)
    monkeypatch.setitem(prepare.SOURCES, "voc", dataclasses.replace(voc, archives=(archive,)))
    assert run_main("voc", "--root", tmp_path, "--download", "--verify", "--mirror", server.url) == 0
    assert len(get_dataset(f"voc:{tmp_path / 'VOCdevkit' / 'VOC2012'}", "train")) == 2


def test_a_dropped_connection_resumes_with_a_range_request(server, tmp_path, capsys):
    server.drop_after = 1000
    code = run_main("camvid", "--root", tmp_path, "--download", "--mirror", server.url)
    one_line_error(capsys, code, "re-run to resume")
    assert os.path.getsize(tmp_path / "downloads" / "master.zip.part") == 1000
    assert not (tmp_path / "camvid").exists()
    assert run_main("camvid", "--root", tmp_path, "--download", "--mirror", server.url) == 0
    assert server.requests[-1] == ("master.zip", "bytes=1000-")
    assert len(get_dataset(f"camvid:{tmp_path / 'camvid'}", "test")) == 1


def test_a_corrupt_archive_is_set_aside_and_nothing_is_extracted(server, tmp_path, capsys):
    data = bytearray(server.files["master.zip"])
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)  # damage compressed data: a CRC mismatch
    server.files["master.zip"] = bytes(data)
    code = run_main("camvid", "--root", tmp_path, "--download", "--mirror", server.url)
    one_line_error(capsys, code, "corrupt archive")
    assert not (tmp_path / "camvid").exists()
    assert (tmp_path / "downloads" / "master.zip.corrupt").exists()


def test_no_network_and_a_missing_archive_are_one_line(tmp_path, capsys):
    code = run_main("camvid", "--root", tmp_path, "--download", "--mirror", "http://127.0.0.1:9")
    one_line_error(capsys, code, "cannot download http://127.0.0.1:9/master.zip")
    code = run_main("camvid", "--root", tmp_path)
    one_line_error(capsys, code, "master.zip: missing; fetch it from https://github.com/")


def test_bad_roots_and_mirrors_are_one_line(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("not a folder")
    for root, text in ((a_file, "is a file, not a folder"), ("", "--root is empty"),
                       ("/proc/jaxseg-root", "cannot create the dataset folder")):
        one_line_error(capsys, run_main("camvid", "--root", root, "--download"), text)
    for mirror in ("mirror.example.org", "http://", "ftp://host/x"):
        code = run_main("camvid", "--root", tmp_path / "r", "--download", "--mirror", mirror)
        one_line_error(capsys, code, f"--mirror {mirror!r}: not a URL")
    assert not (tmp_path / "r").exists()  # nothing made for a bad flag
    # the default root is data/ under the current folder
    monkeypatch.chdir(tmp_path)
    one_line_error(capsys, run_main("camvid"), f"{tmp_path / 'data' / 'downloads' / 'master.zip'}: missing")


def test_coco_extracts_and_builds_the_voc21_cache(server, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXSEG_CACHE", str(tmp_path / "cache"))
    assert run_main("coco", "--root", tmp_path, "--download", "--verify", "--mirror", server.url) == 0
    dataset = get_dataset(f"coco:{tmp_path / 'coco'}", "val")
    assert len(dataset) == 1
    label = np.asarray(dataset[0]["label"])
    assert (label[1:7, 1:7] == 7).all() and (label[10:, 10:] == 0).all()  # car (VOC 7), background


def test_a_full_disk_is_one_line_and_resumable(server, tmp_path):
    """The file-size limit stands in for a full disk: the download stops with one line."""
    limited = ("import resource, signal, sys\n"
               "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill\n"
               "resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))\n"
               "from jaxseg.cli.prepare import main\n"
               "sys.exit(main(sys.argv[1:]))\n")
    arguments = ["camvid", "--root", str(tmp_path), "--download", "--mirror", server.url]
    result = subprocess.run([sys.executable, "-c", limited, *arguments], cwd=paths.REPO,
                            capture_output=True, text=True, timeout=120)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "re-run to resume" in errors[0], result.stderr
    assert not (tmp_path / "camvid").exists()
    # the command's former address, `python -m jaxseg.data.prepare`, still runs it
    result = subprocess.run([sys.executable, "-m", "jaxseg.data.prepare", *arguments],
                            cwd=paths.REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(get_dataset(f"camvid:{tmp_path / 'camvid'}", "train")) == 3
