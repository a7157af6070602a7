"""The local Hub stand-in (`tests/hub_server.py`), driven through the real huggingface_hub client.

Uploads use the plain git-LFS transfer (`HF_HUB_DISABLE_XET=1`, set in conftest): the Xet transfer protocol is
not covered by the stand-in nor by these tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from huggingface_hub import (
    HfApi,
    constants,
    create_branch,
    hf_hub_download,
    list_repo_files,
    model_info,
    snapshot_download,
    upload_file,
    upload_folder,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)


def _tree(folder: str | Path) -> dict[str, bytes]:
    """Every file under `folder` by relative posix path, with its bytes."""
    root = Path(folder)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _make_folder(folder: Path) -> dict[str, bytes]:
    files = {
        "config.json": json.dumps({"sample_size": 8, "note": "ddpm-ext"}).encode(),
        "sub/notes.txt": "second line\nthird line\n".encode(),
        "weights.bin": os.urandom(1 << 20),
    }
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return files


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob " + str(len(data)).encode() + b"\0" + data).hexdigest()


def test_endpoint_points_at_the_stand_in(hub_server):
    assert constants.ENDPOINT == hub_server.url
    assert constants.HF_HUB_DISABLE_XET


def test_non_loopback_connection_is_refused_by_the_session_guard():
    with pytest.raises(ConnectionRefusedError, match="must not reach the network"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)


def test_whoami_reports_the_token_user(hub_server, hf_token):
    info = HfApi().whoami(token=hf_token)
    assert info["name"] == hub_server.user
    assert [org["name"] for org in info["orgs"]] == list(hub_server.orgs)


def test_folder_round_trip_is_byte_identical(hub_server, hf_token, tmp_path):
    files = _make_folder(tmp_path / "src")
    repo_id = HfApi().create_repo("round-trip", token=hf_token).repo_id
    assert repo_id == f"{hub_server.user}/round-trip"
    upload_folder(repo_id=repo_id, folder_path=tmp_path / "src", token=hf_token)

    downloaded = _tree(snapshot_download(repo_id, token=hf_token))
    assert {name: downloaded[name] for name in files} == files
    assert set(list_repo_files(repo_id, token=hf_token)) == set(files) | {".gitattributes"}


def test_upload_uses_base64_for_text_and_lfs_batch_put_for_binary(hub_server, hf_token, tmp_path):
    files = _make_folder(tmp_path / "src")
    repo_id = HfApi().create_repo("paths", token=hf_token).repo_id
    upload_folder(repo_id=repo_id, folder_path=tmp_path / "src", token=hf_token)

    oid = hashlib.sha256(files["weights.bin"]).hexdigest()
    assert len(hub_server.calls("POST", r"^/tester/paths\.git/info/lfs/objects/batch$")) == 1
    assert [r.path for r in hub_server.calls("PUT")] == [f"/_lfs/{oid}"]
    assert len(hub_server.calls("POST", r"/info/lfs/objects/verify$")) == 1
    (commit,) = hub_server.calls("POST", r"^/api/models/tester/paths/commit/main$")
    assert sorted(commit.detail.split()) == ["file:config.json", "file:sub/notes.txt", "lfsFile:weights.bin"]


def test_download_etags_are_sha256_for_lfs_and_git_sha1_for_regular_files(hub_server, hf_token, tmp_path):
    files = _make_folder(tmp_path / "src")
    repo_id = HfApi().create_repo("etags", token=hf_token).repo_id
    upload_folder(repo_id=repo_id, folder_path=tmp_path / "src", token=hf_token)

    # the client names cached blobs after the ETag it was served
    lfs_blob = Path(hf_hub_download(repo_id, "weights.bin", token=hf_token)).resolve()
    regular_blob = Path(hf_hub_download(repo_id, "config.json", token=hf_token)).resolve()
    assert lfs_blob.name == hashlib.sha256(files["weights.bin"]).hexdigest()
    assert regular_blob.name == _git_sha1(files["config.json"])
    assert lfs_blob.read_bytes() == files["weights.bin"]


def test_size_threshold_sends_a_large_text_file_through_lfs(hub_server, hf_token):
    from hub_server import LFS_SIZE_THRESHOLD

    data = b"0123456789abcdef\n" * (LFS_SIZE_THRESHOLD // 17 + 1)
    repo_id = HfApi().create_repo("big-text", token=hf_token).repo_id
    upload_file(path_or_fileobj=data, path_in_repo="big.txt", repo_id=repo_id, token=hf_token)

    siblings = model_info(repo_id, files_metadata=True, token=hf_token).siblings
    (sibling,) = [s for s in siblings if s.rfilename == "big.txt"]
    assert sibling.lfs is not None and sibling.lfs.sha256 == hashlib.sha256(data).hexdigest()
    assert sibling.size == len(data)
    assert Path(hf_hub_download(repo_id, "big.txt", token=hf_token)).read_bytes() == data


def test_old_commit_sha_still_serves_old_bytes(hub_server, hf_token):
    repo_id = HfApi().create_repo("pinning", token=hf_token).repo_id
    first = upload_file(path_or_fileobj=b"version 1\n", path_in_repo="v.txt", repo_id=repo_id, token=hf_token)
    second = upload_file(path_or_fileobj=b"version 2\n", path_in_repo="v.txt", repo_id=repo_id, token=hf_token)
    assert first.oid != second.oid and len(first.oid) == 40

    assert Path(hf_hub_download(repo_id, "v.txt", revision=first.oid, token=hf_token)).read_bytes() == b"version 1\n"
    assert Path(hf_hub_download(repo_id, "v.txt", token=hf_token)).read_bytes() == b"version 2\n"
    assert _tree(snapshot_download(repo_id, revision=first.oid, token=hf_token))["v.txt"] == b"version 1\n"
    assert model_info(repo_id, revision=first.oid, token=hf_token).sha == first.oid
    assert model_info(repo_id, token=hf_token).sha == second.oid


def test_branch_from_old_commit_moves_independently_of_main(hub_server, hf_token):
    repo_id = HfApi().create_repo("branches", token=hf_token).repo_id
    first = upload_file(path_or_fileobj=b"a", path_in_repo="f.txt", repo_id=repo_id, token=hf_token)
    upload_file(path_or_fileobj=b"b", path_in_repo="f.txt", repo_id=repo_id, token=hf_token)
    create_branch(repo_id, branch="dev", revision=first.oid, token=hf_token)
    on_dev = upload_file(path_or_fileobj=b"c", path_in_repo="g.txt", repo_id=repo_id, revision="dev", token=hf_token)

    assert Path(hf_hub_download(repo_id, "f.txt", revision="dev", token=hf_token)).read_bytes() == b"a"
    assert Path(hf_hub_download(repo_id, "f.txt", token=hf_token)).read_bytes() == b"b"
    assert "g.txt" not in list_repo_files(repo_id, token=hf_token)
    refs = {ref.name: ref.target_commit for ref in HfApi().list_repo_refs(repo_id, token=hf_token).branches}
    assert refs["dev"] == on_dev.oid
    with pytest.raises(HfHubHTTPError) as exc:
        create_branch(repo_id, branch="dev", token=hf_token)
    assert exc.value.response.status_code == 409
    create_branch(repo_id, branch="dev", token=hf_token, exist_ok=True)


def test_commit_to_unknown_branch_is_refused_like_the_hub(hub_server, hf_token):
    repo_id = HfApi().create_repo("no-branch", token=hf_token).repo_id
    with pytest.raises(RevisionNotFoundError):
        upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id, revision="nope", token=hf_token)


def test_create_repo_twice_with_exist_ok_returns_the_same_repo(hub_server, hf_token):
    api = HfApi()
    first = api.create_repo("twice", token=hf_token)
    second = api.create_repo("twice", token=hf_token, exist_ok=True)
    assert first == second == f"{hub_server.url}/{hub_server.user}/twice"
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_repo("twice", token=hf_token)
    assert exc.value.response.status_code == 409


def test_private_flag_is_kept_and_hides_the_repo_without_token(hub_server, hf_token):
    api = HfApi()
    private_id = api.create_repo("secret", private=True, token=hf_token).repo_id
    public_id = api.create_repo("open", token=hf_token).repo_id
    assert api.model_info(private_id, token=hf_token).private is True
    assert api.model_info(public_id, token=hf_token).private is False
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(private_id, token=False)


def test_write_without_token_raises_the_clients_http_error(hub_server, hf_token):
    repo_id = HfApi().create_repo("guarded", token=hf_token).repo_id
    with pytest.raises(HfHubHTTPError) as exc:
        HfApi().create_repo("anonymous", token=False)
    assert exc.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as exc:
        upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id, token=False)
    assert exc.value.response.status_code == 401
    assert list_repo_files(repo_id) == [".gitattributes"]


def test_missing_entry_revision_and_repo_raise_their_client_errors(hub_server, hf_token):
    repo_id = HfApi().create_repo("errors", token=hf_token).repo_id
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "missing.txt", token=hf_token)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, ".gitattributes", revision="no-such-branch", token=hf_token)
    with pytest.raises(RepositoryNotFoundError):
        model_info("tester/does-not-exist", token=hf_token)


def test_failed_commit_raises_and_leaves_repo_and_local_folder_untouched(hub_server, hf_token, tmp_path):
    _make_folder(tmp_path / "src")
    before = _tree(tmp_path / "src")
    repo_id = HfApi().create_repo("fails", token=hf_token).repo_id
    head = model_info(repo_id, token=hf_token).sha

    hub_server.fail_next_commit = True
    with pytest.raises(HfHubHTTPError) as exc:
        upload_folder(repo_id=repo_id, folder_path=tmp_path / "src", token=hf_token)
    assert exc.value.response.status_code == 500
    assert len(hub_server.calls("PUT", r"^/_lfs/")) == 1  # it failed mid-push, after the LFS upload
    assert _tree(tmp_path / "src") == before
    assert model_info(repo_id, token=hf_token).sha == head
    assert list_repo_files(repo_id, token=hf_token) == [".gitattributes"]

    upload_folder(repo_id=repo_id, folder_path=tmp_path / "src", token=hf_token)  # the next one goes through
    assert model_info(repo_id, token=hf_token).sha != head


def test_stale_parent_commit_is_rejected(hub_server, hf_token):
    repo_id = HfApi().create_repo("stale", token=hf_token).repo_id
    first = upload_file(path_or_fileobj=b"1", path_in_repo="a.txt", repo_id=repo_id, token=hf_token)
    upload_file(path_or_fileobj=b"2", path_in_repo="a.txt", repo_id=repo_id, token=hf_token)
    with pytest.raises(HfHubHTTPError) as exc:
        upload_file(path_or_fileobj=b"3", path_in_repo="a.txt", repo_id=repo_id, token=hf_token,
                    parent_commit=first.oid)
    assert exc.value.response.status_code == 412


def test_range_request_returns_the_requested_bytes(hub_server, hf_token):
    data = bytes(range(256)) * 8
    repo_id = HfApi().create_repo("ranges", token=hf_token).repo_id
    upload_file(path_or_fileobj=data, path_in_repo="r.bin", repo_id=repo_id, token=hf_token)
    request = urllib.request.Request(f"{hub_server.url}/{repo_id}/resolve/main/r.bin", headers={"Range": "bytes=100-"})
    with urllib.request.urlopen(request) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
        assert response.read() == data[100:]


def test_cached_snapshot_is_served_offline_after_the_server_stops(hub_server, hf_token, tmp_path):
    files = _make_folder(tmp_path / "src")
    repo_id = HfApi().create_repo("offline", token=hf_token).repo_id
    upload_folder(repo_id=repo_id, folder_path=tmp_path / "src", token=hf_token)
    online = snapshot_download(repo_id, token=hf_token)
    hub_server.stop()

    assert snapshot_download(repo_id, local_files_only=True) == online
    code = f"from huggingface_hub import snapshot_download; print(snapshot_download({repo_id!r}))"
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            capture_output=True, text=True, timeout=60, check=True)
    offline = result.stdout.strip().splitlines()[-1]
    assert offline == online
    assert {name: _tree(offline)[name] for name in files} == files


def test_diffusers_push_to_hub_round_trips_a_scheduler_config(hub_server, hf_token):
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=123, beta_schedule="squaredcos_cap_v2")
    scheduler.push_to_hub("sched", token=hf_token)
    loaded = DDPMScheduler.from_pretrained(f"{hub_server.user}/sched", token=hf_token)
    assert loaded.config.num_train_timesteps == 123
    assert loaded.config.beta_schedule == "squaredcos_cap_v2"
    assert hub_server.calls("POST", r"^/api/validate-yaml$")
