"""The sandbox's CDSE S3 endpoint and what the CDSE client will lean on: boto3 and GDAL ``/vsis3/`` against it
unchanged (SigV4 verified for real), global COG layout and window reads, checksums, the redirect to another
host, the per-user connection cap across OData, download and S3, and the CDSE faults."""

from __future__ import annotations

import hashlib
import re
import threading
from urllib.parse import urlsplit

import pytest
import requests

boto3 = pytest.importorskip("boto3")
rasterio = pytest.importorskip("rasterio")
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

from intake_clms.sandbox import cog  # noqa: E402

TIMEOUT = 30
NDVI = "ndvi_global_300m_10daily_v2"
BBOX = (7.0, 47.0, 7.25, 47.25)  # a quarter-degree window: 84 x 84 pixels of the 1/336 degree grid


def attr(name: str, value: str) -> str:
    return (f"Attributes/OData.CSC.StringAttribute/any(att:att/Name eq '{name}' and "
            f"att/OData.CSC.StringAttribute/Value eq '{value}')")


def ndvi_cogs(sb, top: int = 1) -> list[dict]:
    flt = f"Collection/Name eq 'CLMS' and {attr('datasetIdentifier', NDVI)} and {attr('fileFormat', 'cog')}"
    r = requests.get(sb.urls["cdse_odata"] + "/Products", params={"$filter": flt, "$top": top,
                                                                "$orderby": "ContentDate/Start asc"}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()["value"]


def s3_key(sb, product: dict) -> str:
    """The object key of a product's one file (below the bucket), from its S3Path and the Nodes listing."""
    nodes = requests.get(f"{sb.urls['cdse_odata']}/Products({product['Id']})/Nodes({product['Name']})/Nodes",
                         timeout=TIMEOUT).json()["result"]
    assert product["S3Path"].startswith("/eodata/CLMS/")
    return product["S3Path"][len("/eodata/"):] + "/" + nodes[0]["Name"]


def local_file(sb, product: dict):
    st = sb.ctx.state["cdse"]
    return st.path(st.find(product["Id"]))


def s3_client(sb, secret: str | None = None, key: str | None = None):
    env = sb.env()
    return boto3.client(
        "s3", endpoint_url=env["CDSE_S3_ENDPOINT"], region_name="default",
        aws_access_key_id=key or env["CDSE_S3_ACCESS_KEY"],
        aws_secret_access_key=secret or env["CDSE_S3_SECRET_KEY"],
        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
    )


def gdal_env(sb) -> rasterio.Env:
    """GDAL settings for ``/vsis3/`` on the sandbox, scoped to a ``with`` block.

    rasterio refuses AWS keys as plain options when boto3 is installed: they go
    in an ``AWSSession``, whose ``endpoint_url`` is GDAL's ``AWS_S3_ENDPOINT``
    (host:port, no scheme).
    """
    from rasterio.session import AWSSession

    env = sb.env()
    session = AWSSession(aws_access_key_id=env["CDSE_S3_ACCESS_KEY"], aws_secret_access_key=env["CDSE_S3_SECRET_KEY"],
                         region_name="default", endpoint_url=urlsplit(env["CDSE_S3_ENDPOINT"]).netloc)
    return rasterio.Env(session=session, AWS_HTTPS="NO", AWS_VIRTUAL_HOSTING="FALSE")


def token(sb) -> dict:
    c = sb.credentials["cdse"]
    r = requests.post(sb.urls["cdse_token"], data={"client_id": "cdse-public", "grant_type": "password",
                                                   "username": c["username"], "password": c["password"]},
                      timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()


def user(sb) -> str:
    return sb.credentials["cdse"]["username"]


# --------------------------------------------------------------------------- environment and hosts


def test_env_names_point_at_the_sandbox_and_the_s3_host_is_another_name(sandbox):
    env = sandbox.env()
    names = {"CDSE_TOKEN_URL", "CDSE_ODATA_URL", "CDSE_DOWNLOAD_URL", "CDSE_USERNAME", "CDSE_PASSWORD",
             "CDSE_S3_ENDPOINT", "CDSE_S3_ACCESS_KEY", "CDSE_S3_SECRET_KEY"}
    assert names <= set(env)
    s3, odata = urlsplit(env["CDSE_S3_ENDPOINT"]), urlsplit(env["CDSE_ODATA_URL"])
    assert s3.scheme == "http" and s3.path == "" and s3.port == odata.port and s3.hostname != odata.hostname
    product = ndvi_cogs(sandbox)[0]
    location = requests.get(f"{env['CDSE_DOWNLOAD_URL']}/Products({product['Id']})/$value",
                            headers={"Authorization": f"Bearer {token(sandbox)['access_token']}"},
                            allow_redirects=False, timeout=TIMEOUT).headers["Location"]
    assert urlsplit(location).hostname not in (urlsplit(env["CDSE_DOWNLOAD_URL"]).hostname, None)


# --------------------------------------------------------------------------- boto3


def test_boto3_lists_and_range_reads(sandbox):
    product = ndvi_cogs(sandbox)[0]
    key = s3_key(sandbox, product)
    data = local_file(sandbox, product).read_bytes()
    s3 = s3_client(sandbox)

    listed = s3.list_objects_v2(Bucket="eodata", Prefix=product["S3Path"][len("/eodata/"):] + "/")
    [obj] = listed["Contents"]
    assert obj["Key"] == key and obj["Size"] == product["ContentLength"] == len(data)
    assert obj["ETag"].strip('"') == product["Checksum"][0]["Value"]

    day_folder = key.rsplit("/", 2)[0] + "/"  # .../YYYY/MM/DD/
    by_day = s3.list_objects_v2(Bucket="eodata", Prefix=day_folder, Delimiter="/")
    assert product["Name"] + "/" in {p["Prefix"][len(day_folder):] for p in by_day["CommonPrefixes"]}
    assert "Contents" not in by_day

    dataset_folder = key.split("/", 4)[:4]
    years = s3.list_objects_v2(Bucket="eodata", Prefix="/".join(dataset_folder) + "/", Delimiter="/")
    year_names = [p["Prefix"].rstrip("/").rsplit("/", 1)[1] for p in years["CommonPrefixes"]]
    assert year_names == sorted(year_names) and key.split("/")[4] in year_names and len(year_names) > 3

    pages = s3.get_paginator("list_objects_v2").paginate(Bucket="eodata", Prefix="/".join(dataset_folder) + "/",
                                                         Delimiter="/", PaginationConfig={"PageSize": 2})
    paged = [p["Prefix"] for page in pages for p in page.get("CommonPrefixes", [])]
    assert paged == [p["Prefix"] for p in years["CommonPrefixes"]]

    head = s3.head_object(Bucket="eodata", Key=key)
    assert head["ContentLength"] == len(data)
    part = s3.get_object(Bucket="eodata", Key=key, Range="bytes=100-299")
    assert part["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert part["ContentRange"] == f"bytes 100-299/{len(data)}"
    assert part["Body"].read() == data[100:300]
    assert s3.get_object(Bucket="eodata", Key=key)["Body"].read() == data

    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket="eodata", Key=key + ".nope")
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"

    url = s3.generate_presigned_url("get_object", Params={"Bucket": "eodata", "Key": key}, ExpiresIn=60)
    assert requests.get(url, timeout=TIMEOUT).content == data
    tampered = re.sub(r"X-Amz-Signature=[0-9a-f]{4}", "X-Amz-Signature=0000", url)
    assert requests.get(tampered, timeout=TIMEOUT).status_code == 403


def test_bad_signature_unknown_key_and_unsigned_requests_are_refused(sandbox):
    product = ndvi_cogs(sandbox)[0]
    key = s3_key(sandbox, product)
    with pytest.raises(ClientError) as bad:
        s3_client(sandbox, secret="not-the-secret").get_object(Bucket="eodata", Key=key)
    assert bad.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert bad.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as unknown:
        s3_client(sandbox, key="NOSUCHACCESSKEY").list_objects_v2(Bucket="eodata", Prefix="CLMS/")
    assert unknown.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    anonymous = requests.get(f"{sandbox.env()['CDSE_S3_ENDPOINT']}/eodata/{key}", timeout=TIMEOUT)
    assert anonymous.status_code == 403 and "<Code>AccessDenied</Code>" in anonymous.text
    assert s3_client(sandbox).head_object(Bucket="eodata", Key=key)["ContentLength"] == product["ContentLength"]


# --------------------------------------------------------------------------- COGs and GDAL


def test_global_cogs_are_tiled_compressed_with_overviews_and_ifd_first(sandbox):
    product = ndvi_cogs(sandbox)[0]
    path = local_file(sandbox, product)
    info = cog.layout(path)
    assert info["layout"] == "COG" and info["compression"] == "deflate"
    assert info["block"] in ((128, 128), (256, 256), (512, 512)) and info["overviews"]
    assert info["grid"][0] * info["grid"][1] >= 64  # many internal tiles
    head = path.read_bytes()[:8]
    assert head[:4] in (b"II*\x00", b"MM\x00*")
    first_ifd = int.from_bytes(head[4:8], "little" if head[:2] == b"II" else "big")
    first_tile = min(offset for offset, _ in info["tiles"].values())
    assert first_ifd < 16_384 < first_tile or first_ifd < first_tile  # the IFD comes before the image data
    under = cog.tiles_under(info, BBOX)
    assert 1 <= len(under) <= 4
    tile_bytes = sum(info["tiles"][t][1] for t in under)
    assert tile_bytes * 20 < path.stat().st_size  # a small window is a small part of the file


def test_gdal_vsis3_window_equals_the_local_file_and_reads_few_bytes(sandbox):
    from rasterio.windows import from_bounds

    product = ndvi_cogs(sandbox)[0]
    key = s3_key(sandbox, product)
    path = local_file(sandbox, product)
    with rasterio.open(path) as local:
        window = from_bounds(*BBOX, transform=local.transform).round_offsets().round_lengths()
        expected = local.read(1, window=window)
    sandbox.log.clear()
    with gdal_env(sandbox):
        with rasterio.open(f"/vsis3/eodata/{key}") as remote:
            got = remote.read(1, window=window)
            assert (remote.width, remote.height) == (1343, 1343)  # tiny: 4 x 4 degrees at 1/336 degree
    assert got.shape == (84, 84) and (got == expected).all()
    reads = [e for e in sandbox.log.entries(service="cdse", endpoint="s3")
             if e.method == "GET" and e.path == f"/eodata/{key}"]  # GDAL may also list the folder first
    assert reads and all(e.status in (200, 206) for e in reads) and all(e.range for e in reads)
    transferred = sum(e.bytes_sent for e in reads)
    info = cog.layout(path)
    tile_bytes = sum(info["tiles"][t][1] for t in cog.tiles_under(info, BBOX))
    assert tile_bytes <= transferred < path.stat().st_size / 5
    print(f"window read: {transferred} of {path.stat().st_size} bytes in {len(reads)} requests; tiles: {tile_bytes}")


def test_window_pixels_are_deterministic_per_product(sandbox_factory, tmp_path):
    one, other = sandbox_factory(), sandbox_factory()
    a, b = ndvi_cogs(one, top=2), ndvi_cogs(other, top=2)
    assert [p["Checksum"][0]["Value"] for p in a] == [p["Checksum"][0]["Value"] for p in b]
    assert a[0]["Checksum"][0]["Value"] != a[1]["Checksum"][0]["Value"]  # another date, other pixels


# --------------------------------------------------------------------------- checksums


def test_checksums_are_those_of_the_served_bytes(sandbox):
    product = ndvi_cogs(sandbox)[0]
    grant = token(sandbox)
    body = requests.get(f"{sandbox.urls['cdse_download']}/Products({product['Id']})/$value",
                        headers={"Authorization": f"Bearer {grant['access_token']}"}, timeout=TIMEOUT).content
    via_s3 = s3_client(sandbox).get_object(Bucket="eodata", Key=s3_key(sandbox, product))["Body"].read()
    assert body == via_s3 and len(body) == product["ContentLength"]
    sums = {c["Algorithm"]: c["Value"] for c in product["Checksum"]}
    assert sums["MD5"] == hashlib.md5(body).hexdigest()
    blake3 = pytest.importorskip("blake3")
    assert sums["BLAKE3"] == blake3.blake3(body).hexdigest()


def test_bad_checksum_fault_serves_other_bytes_of_the_same_length(sandbox):
    product = ndvi_cogs(sandbox)[0]
    location = requests.get(f"{sandbox.urls['cdse_download']}/Products({product['Id']})/$value",
                            headers={"Authorization": f"Bearer {token(sandbox)['access_token']}"},
                            allow_redirects=False, timeout=TIMEOUT).headers["Location"]
    sandbox.faults.add("bad_checksum", service="cdse", endpoint="download")
    bad = requests.get(location, timeout=TIMEOUT)
    assert bad.status_code == 200 and len(bad.content) == product["ContentLength"]
    assert hashlib.md5(bad.content).hexdigest() != product["Checksum"][0]["Value"]
    good = requests.get(location, timeout=TIMEOUT)
    assert hashlib.md5(good.content).hexdigest() == product["Checksum"][0]["Value"]


# --------------------------------------------------------------------------- tokens and faults


def test_401_mid_transfer_then_refresh_and_resume(sandbox):
    product = ndvi_cogs(sandbox)[0]
    grant = token(sandbox)
    url = f"{sandbox.urls['cdse_download']}/Products({product['Id']})/$value"

    def location(access: str) -> requests.Response:
        return requests.get(url, headers={"Authorization": f"Bearer {access}"}, allow_redirects=False,
                            timeout=TIMEOUT)

    sandbox.faults.add("token_cut", service="cdse", endpoint="download", after_bytes=1000)
    got = b""
    with requests.get(location(grant["access_token"]).headers["Location"], stream=True, timeout=TIMEOUT) as r:
        with pytest.raises(requests.exceptions.RequestException):
            for chunk in r.iter_content(256):
                got += chunk
    assert 0 < len(got) <= 1000
    assert location(grant["access_token"]).status_code == 401  # refused until refreshed
    form = {"client_id": "cdse-public", "grant_type": "refresh_token", "refresh_token": grant["refresh_token"]}
    fresh = requests.post(sandbox.urls["cdse_token"], data=form, timeout=TIMEOUT).json()["access_token"]
    moved = location(fresh)
    assert moved.status_code == 307
    rest = requests.get(moved.headers["Location"], headers={"Range": f"bytes={len(got)}-"}, timeout=TIMEOUT)
    assert rest.status_code == 206
    assert hashlib.md5(got + rest.content).hexdigest() == product["Checksum"][0]["Value"]


def test_one_second_access_tokens(sandbox):
    st = sandbox.ctx.state["cdse"]
    st.access_lifetime = 1
    sandbox.clock.set_speed(0)  # sandbox time moves only when the test says
    grant = token(sandbox)
    assert grant["expires_in"] == 1
    product = ndvi_cogs(sandbox)[0]
    url = f"{sandbox.urls['cdse_download']}/Products({product['Id']})/$value"
    auth = {"Authorization": f"Bearer {grant['access_token']}"}
    assert requests.get(url, headers=auth, allow_redirects=False, timeout=TIMEOUT).status_code == 307
    sandbox.clock.advance(1.5)
    assert requests.get(url, headers=auth, allow_redirects=False, timeout=TIMEOUT).status_code == 401


def test_rate_limit_fault_with_retry_after(sandbox):
    sandbox.faults.add("status", service="cdse", endpoint="products", status=429, retry_after=3)
    r = requests.get(sandbox.urls["cdse_odata"] + "/Products", params={"$top": 1}, timeout=TIMEOUT)
    assert r.status_code == 429 and r.headers["Retry-After"] == "3"
    assert requests.get(sandbox.urls["cdse_odata"] + "/Products", params={"$top": 1},
                        timeout=TIMEOUT).status_code == 200


def test_connection_cap_fault_answers_429_once(sandbox):
    sandbox.faults.add("connection_cap", service="cdse", endpoint="s3")
    product = ndvi_cogs(sandbox)[0]
    s3 = s3_client(sandbox)
    with pytest.raises(ClientError) as refused:
        s3.head_object(Bucket="eodata", Key=s3_key(sandbox, product))
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert s3.head_object(Bucket="eodata", Key=s3_key(sandbox, product))["ContentLength"] > 0


# --------------------------------------------------------------------------- connection cap


def test_cap_counts_odata_download_and_s3_together(sandbox):
    st = sandbox.ctx.state["cdse"]
    st.max_concurrent = 2
    product = ndvi_cogs(sandbox)[0]
    key = s3_key(sandbox, product)
    grant = token(sandbox)
    bearer = {"Authorization": f"Bearer {grant['access_token']}"}
    location = requests.get(f"{sandbox.urls['cdse_download']}/Products({product['Id']})/$value", headers=bearer,
                            allow_redirects=False, timeout=TIMEOUT).headers["Location"]
    st.reset_concurrency()
    # two slow transfers hold the user's two slots: one download, one S3 read
    sandbox.faults.add("trickle", service="cdse", endpoint="download", rate=2000)
    sandbox.faults.add("trickle", service="cdse", endpoint="s3", rate=2000)
    held_download = requests.get(location, stream=True, timeout=TIMEOUT)
    s3 = s3_client(sandbox)
    held_s3 = s3.get_object(Bucket="eodata", Key=key)
    try:
        assert st.concurrency()["in_flight"][user(sandbox)] == 2
        catalogue = requests.get(f"{sandbox.urls['cdse_odata']}/Products({product['Id']})", headers=bearer,
                                 timeout=TIMEOUT)
        assert catalogue.status_code == 429 and "Max session number 2 exceeded" in catalogue.json()["detail"]
        with pytest.raises(ClientError) as refused:
            s3.head_object(Bucket="eodata", Key=key)
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
        # anonymous catalogue requests count for nobody's account
        assert requests.get(f"{sandbox.urls['cdse_odata']}/Products({product['Id']})",
                            timeout=TIMEOUT).status_code == 200
    finally:
        held_download.close()
        held_s3["Body"].close()
    seen = st.concurrency()
    assert seen["peak"][user(sandbox)] == 3 and seen["refused"][user(sandbox)] == 2
    assert seen["max_concurrent"] == 2


def test_a_client_within_the_cap_leaves_a_peak_at_most_the_cap(sandbox):
    st = sandbox.ctx.state["cdse"]
    product = ndvi_cogs(sandbox)[0]
    key = s3_key(sandbox, product)
    st.reset_concurrency()
    s3 = s3_client(sandbox)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(5):
                start = (n * 5 + i) * 1000
                body = s3.get_object(Bucket="eodata", Key=key, Range=f"bytes={start}-{start + 999}")["Body"].read()
                assert len(body) == 1000
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(st.max_concurrent)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    seen = st.concurrency()
    assert 1 <= seen["peak"][user(sandbox)] <= st.max_concurrent == 4
    assert seen["refused"].get(user(sandbox), 0) == 0
    assert sum(1 for e in sandbox.log.entries(service="cdse", endpoint="s3") if e.range) == 20
