"""The workspace's views against generated series of known geometry: the
overlay is the converter's mask pixel by pixel, the values are the volume's,
and the orientation letters are where the patient is."""

import io

import numpy as np
import pytest

from tests import dicomgen as G
from tests.helpers import wait_for, zip_bytes
from tests.web.test_scans import read_png


def _upload(client, auth, volume, geo, tmp_path):
    paths = G.write_series(tmp_path / "series", volume, geometry=geo)
    blob = zip_bytes({p.name: p.read_bytes() for p in paths})
    resp = client.post("/api/v1/scans", data={"files": [(io.BytesIO(blob), "s.zip")]},
                       headers=auth, content_type="multipart/form-data")
    assert resp.status_code == 201, resp.json
    scan = wait_for(lambda: (lambda s: s if s["status"] != "reading" else None)(
        client.get(resp.json["links"]["self"], headers=auth).json), 90, "the scan")
    assert scan["status"] == "ready", scan
    return scan["series"][0]["links"]


def _values(client, auth, links, plane, index):
    resp = client.get(f"{links['slice']}?plane={plane}&index={index}&format=values",
                      headers=auth)
    assert resp.status_code == 200 and resp.mimetype == "application/octet-stream"
    h, w = int(resp.headers["X-Slice-Height"]), int(resp.headers["X-Slice-Width"])
    return np.frombuffer(resp.data, "<i2").reshape(h, w)


def test_overlay_is_the_converters_mask_pixel_by_pixel(client, auth, workers, tmp_path):
    geo = G.make_geometry("axial", size=(12, 20, 24), spacing=(0.8, 1.2))
    volume = G.render(G.sphere(radius=7.0), geo)
    links = _upload(client, auth, volume, geo, tmp_path)
    # radiological views of an axial series: axial as stored; coronal and
    # sagittal with superior (the last slice) at the top
    expected = {"axial": lambda i: volume[i], "coronal": lambda i: volume[::-1, i, :],
                "sagittal": lambda i: volume[::-1, :, i]}
    counts = {"axial": 12, "coronal": 20, "sagittal": 24}
    for plane, image_of in expected.items():
        for index in (counts[plane] // 2, counts[plane] // 2 + 1):
            image = image_of(index)
            assert np.array_equal(_values(client, auth, links, plane, index), image)
            for threshold in (250.5, 0):
                resp = client.get(f"{links['slice']}?plane={plane}&index={index}"
                                  f"&threshold={threshold}&window=2000&level=0", headers=auth)
                pixels = read_png(resp.data).astype(int)
                tinted = pixels[:, :, 0] != pixels[:, :, 1]
                mask = image > np.floor(threshold)
                assert mask.any() and not mask.all()
                assert np.array_equal(tinted, mask), (plane, index, threshold)
                grey = np.clip((image + 1000.0) * 255.0 / 2000.0, 0, 255).astype(np.uint8)
                assert np.array_equal(pixels[~mask, 1], grey[~mask])


def _marker_side(values, threshold=0):
    """The marker's centre in a view, as fractions of its width and height."""
    rows, cols = np.nonzero(values > threshold)
    h, w = values.shape
    return cols.mean() / (w - 1), rows.mean() / (h - 1)


@pytest.mark.parametrize("orientation,oblique", [("sagittal", 0.0), ("coronal", 30.0)])
def test_a_marker_on_the_patients_left_appears_on_the_side_labelled_L(
        client, auth, workers, tmp_path, orientation, oblique):
    geo = G.make_geometry(orientation, size=(24, 26, 28), oblique_deg=oblique)
    # one marker left, anterior and superior of the centre (LPS: +x, -y, +z)
    volume = G.render(G.sphere(center=(6.0, -6.0, 6.0), radius=3.0), geo)
    links = _upload(client, auth, volume, geo, tmp_path)
    geometry = client.get(links["volume"], headers=auth).json
    # the edges each marker letter should be near, per plane
    for plane, facts in geometry["planes"].items():
        edges = facts["edges"]
        best = max(range(facts["count"]),
                   key=lambda i: (_values(client, auth, links, plane, i) > 0).sum())
        x, y = _marker_side(_values(client, auth, links, plane, best))
        for letter in "LAS":
            if edges["right"][0] == letter:
                assert x > 0.5, (plane, edges)
            if edges["left"][0] == letter:
                assert x < 0.5, (plane, edges)
            if edges["top"][0] == letter:
                assert y < 0.5, (plane, edges)
            if edges["bottom"][0] == letter:
                assert y > 0.5, (plane, edges)
        assert any(letter in "".join(edges.values()) for letter in "LAS")
        # the page's pixel → mm map puts the marker's centre where it is
        m = geometry["to_patient"][plane]
        values = _values(client, auth, links, plane, best)
        rows, cols = np.nonzero(values > 0)
        mm = (np.array(m["origin"]) + cols.mean() * np.array(m["column"])
              + rows.mean() * np.array(m["row"]) + best * np.array(m["index"]))
        assert np.linalg.norm(mm - [6.0, -6.0, 6.0]) < 1.6, (plane, mm)
    axial = geometry["planes"]["axial"]["edges"]
    assert axial["right"] == "L" and axial["left"] == "R"
    if oblique:
        # tilted 30° about x: the rows and slices lean between two axes
        assert any(len(v) == 2 for p in geometry["planes"].values() for v in p["edges"].values())
