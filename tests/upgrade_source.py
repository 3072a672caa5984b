"""Build a populated data folder with an OLDER Forecourt (run as `python -m tests.upgrade_source OUT` from a copy
of that release, see tests/test_upgrade.py): vehicles with rendered photos, a recognition collection with an image,
API keys, ledger entries and an installed license. Prints what it made as JSON for the upgrade test to check.

Only APIs that 41e69bc already had are used here; renders run on a fake segmenter (an ellipse, named as a fake).
"""

from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image


class FakeSegmenter:
    """An ellipse in the middle of the picture, named as a fake."""

    name = "fake-ellipse"
    last_model_ms = 1.0

    def mask(self, image, kind: str = "auto", mirror: bool = False):  # noqa: ANN001, ANN201
        h, w = np.asarray(image).shape[:2]
        yy, xx = np.mgrid[0:h, 0:w]
        return ((((xx - w / 2) / (w / 4)) ** 2 + ((yy - h / 2) / (h / 4)) ** 2) <= 1).astype(np.float32)

    def load(self) -> None:
        return None


def _photo(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8), "RGB").resize((320, 240), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92)
    return buf.getvalue()


def build(out: Path, state_dir: Path, models_dir: Path) -> dict:
    """Populate out (a data folder) with the code on sys.path; returns the facts to check after an upgrade."""
    from licensing.plans import Plan
    from licensing.testing import ThrowawayVendor
    from server import create_app
    from server.services import accounts, catalog_jobs
    from server.services import removebg as removebg_service
    from server.store import close_thread_connections, get_db
    from tests.recognition_synth import jpeg, pattern, scene

    vendor = ThrowawayVendor()
    settings = {"storage": {"data_dir": str(out)}, "models": {"dir": str(models_dir), "require": False},
                "logging": {"level": "WARNING"}, "catalog": {"render_workers": 0},
                "licensing": {"state_dir": str(state_dir), "public_keys": [vendor.public_key]}}
    fake = FakeSegmenter()
    removebg_service._segmenter = lambda: fake  # the old code's own hook; every test of it patches this
    app = create_app(settings)
    app.config["TESTING"] = True
    client = app.test_client()
    with app.app_context():
        admin = accounts.create_user(get_db(), "admin@dealer.example", "correct horse battery", "admin")
        key, key_row = accounts.create_key(get_db(), admin["id"], "dms feed")
        member = accounts.create_user(get_db(), "sales@dealer.example", "correct horse battery", "member")
        member_key, _ = accounts.create_key(get_db(), member["id"], "sales laptop")
        revoked, revoked_row = accounts.create_key(get_db(), member["id"], "old laptop")
        accounts.revoke_key(get_db(), revoked_row["id"])
    h = {"X-Api-Key": key}

    fp = client.get("/v1/licensing/status", headers=h).get_json()["fingerprint"]
    lic = vendor.license(fp, Plan(name="dealer", credits=100, scans=100, uploads=100, stored_images=100),
                         license_id="lic_upgrade", months=120)
    assert client.post("/v1/licensing/license", json={"license": lic}, headers=h).status_code == 200

    vehicles = []
    for vin, seeds in (("1HGCM82633A004352", (1, 2)), ("1FTFW1ET9DFC10312", (3,))):
        v = client.post("/v1/vehicles", json={"vin": vin, "stock_number": f"S-{seeds[0]}"}, headers=h).get_json()
        data = {"photo": [(io.BytesIO(_photo(s)), f"p{s}.jpg") for s in seeds], "angle": ["front"] * len(seeds)}
        r = client.post(f"/v1/vehicles/{v['id']}/photos", data=data, headers=h, content_type="multipart/form-data")
        assert r.status_code == 201, r.get_data(as_text=True)
        vehicles.append(v["id"])
    assert catalog_jobs.run_pending(app) == 3
    renders = {}
    for vid in vehicles:
        for p in client.get(f"/v1/vehicles/{vid}/photos", headers=h).get_json()["data"]:
            body = client.get(p["render"]["url"], headers=h).data
            renders[p["render"]["id"]] = {"photo_id": p["id"], "vehicle_id": vid, "bytes": len(body)}

    r = client.post("/v1/collections", json={"name": "Signs", "object_type": "generic"}, headers=h)
    cid = r.get_json()["id"]
    assert client.put(f"/v1/collections/{cid}/objects/sign-1", json={"name": "Sign 1"}, headers=h).status_code == 201
    ref = jpeg(scene(pattern(1), seed=1))
    r = client.post(f"/v1/collections/{cid}/objects/sign-1/images", headers=h, content_type="multipart/form-data",
                    data={"image_file": [(io.BytesIO(ref), "ref.jpg")]})
    assert r.status_code == 200, r.get_json()
    query = jpeg(scene(pattern(1), seed=7))
    scan = client.post(f"/v1/collections/{cid}/recognize", headers=h,
                       json={"image_file_b64": base64.b64encode(query).decode()}).get_json()
    assert scan["results"][0]["object_id"] == "sign-1", scan
    cut = client.post("/v1.0/removebg", headers=h, data={"image_file": (io.BytesIO(_photo(9)), "x.jpg"),
                                                         "size": "preview"}, content_type="multipart/form-data")
    assert cut.status_code == 200, cut.get_data(as_text=True)

    ledger = client.get("/v1/licensing/ledger", headers=h).get_json()
    status = client.get("/v1/licensing/status", headers=h).get_json()
    usage = client.get("/v1/usage", headers=h).get_json()
    close_thread_connections()
    return {"vendor_public_key": vendor.public_key, "admin_key": key, "admin_key_id": key_row["id"],
            "member_key": member_key, "revoked_key": revoked, "vehicles": vehicles, "renders": renders,
            "collection": cid, "ledger": ledger, "license": {k: status[k] for k in ("state", "license_id", "plan")
                                                             if k in status},
            "usage": usage["metrics"]}


if __name__ == "__main__":
    out_dir, state, models, facts = (Path(a) for a in sys.argv[1:5])
    facts.write_text(json.dumps(build(out_dir, state, models), indent=2, default=str))
