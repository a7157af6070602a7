# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""Publishing a trained output folder to the Hugging Face Hub: the saved pipeline, model card and sample grid only."""

import os
from typing import Optional

from huggingface_hub import create_repo, upload_folder

from .pipelines.pipeline_ddpm_ext import PUBLISH_ALLOW_PATTERNS, PUBLISH_IGNORE_PATTERNS


class HubPushError(RuntimeError):
    """A push to the Hub failed; the local folder is untouched."""


def _one_line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())


def check_repo_id(repo_id, what: str = "hub_model_id") -> str:
    """
    Check a Hub repo id's syntax (no network): raise a one-line `ValueError` naming `what`, the value and the rule.

    Returns:
        `str`: `repo_id`.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or not repo_id:
        raise ValueError(f"{what}={repo_id!r} is not a Hub repo id; expected 'name' or 'namespace/name'")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(
            f"{what}={repo_id!r} is not a valid Hub repo id; allowed: 'name' or 'namespace/name' made of letters,"
            " digits, '-', '_' and '.' (no spaces, no '--' or '..', at most 96 characters)"
        ) from err
    return repo_id


def check_push_access(repo_id: str, token: Optional[str] = None, private: bool = False) -> str:
    """
    Before a long run that ends with a push: check the repo id, reach the Hub and create the repo (`exist_ok`), so a
    bad id, a missing or wrong token or an unreachable endpoint is found now, not after training.

    Returns:
        `str`: the full repo id ("namespace/name").

    Raises:
        `ValueError`: the repo id is invalid, or the Hub could not be reached or refused to create the repo (the
            message is one line: the endpoint, the repo and the client's reason).
    """
    from huggingface_hub import constants

    check_repo_id(repo_id)
    try:
        return create_repo(repo_id, token=token, private=private, exist_ok=True, repo_type="model").repo_id
    except Exception as err:  # network, auth, permissions: say so before training starts
        raise ValueError(
            f"--push_to_hub: cannot create or reach the Hub repo {repo_id!r} at {constants.ENDPOINT}"
            f" ({_one_line(err)}); check the network, HF_ENDPOINT, --hub_token / `hf auth login`, or drop"
            " --push_to_hub (publish later with `ddpm-ext publish`)"
        ) from err


def push_output_dir(
    output_dir: str,
    repo_id: str,
    token: Optional[str] = None,
    private: bool = False,
    revision: Optional[str] = None,
    commit_message: str = "Upload DDPMExtPipeline trained with ddpm-ext",
) -> str:
    """
    Upload a saved ddpm-ext pipeline folder (as written by training or `DDPMExtPipeline.save_pretrained`) to a
    Hub model repo, creating the repo if needed. Only the pipeline files, `README.md` and `sample_grid.png` are
    sent; `checkpoint-*` folders, logs and anything else in `output_dir` are not. The folder is only read.

    Args:
        output_dir (`str`): the folder; must hold `model_index.json`.
        repo_id (`str`): "namespace/name" or "name".
        token (`str`, *optional*): Hub token; defaults to the logged-in one.
        private (`bool`, defaults to `False`): create the repo private (an existing repo keeps its visibility).
        revision (`str`, *optional*): branch to commit to.
        commit_message (`str`): the commit message.

    Returns:
        `str`: the URL of the commit.

    Raises:
        `ValueError`: `output_dir` is not a saved pipeline.
        `HubPushError`: creating the repo or uploading failed (the message says why).
    """
    if not os.path.isfile(os.path.join(output_dir, "model_index.json")):
        raise ValueError(
            f"output_dir={output_dir!r} holds no saved pipeline (model_index.json missing); train or save first"
        )
    if not repo_id or not isinstance(repo_id, str):
        raise ValueError(f"repo_id={repo_id!r} is not a valid Hub repo id; expected 'namespace/name' or 'name'")
    try:
        repo_id = create_repo(repo_id, token=token, private=private, exist_ok=True, repo_type="model").repo_id
        if revision is not None:
            from huggingface_hub import create_branch

            create_branch(repo_id, branch=revision, token=token, exist_ok=True)
        commit = upload_folder(
            repo_id=repo_id,
            folder_path=output_dir,
            token=token,
            revision=revision,
            commit_message=commit_message,
            allow_patterns=PUBLISH_ALLOW_PATTERNS,
            ignore_patterns=PUBLISH_IGNORE_PATTERNS,
        )
    except Exception as err:  # network, auth, permissions: report, keep the local folder
        raise HubPushError(
            f"pushing {output_dir!r} to the Hub repo {repo_id!r} failed: {type(err).__name__}: {err}."
            " The local folder is intact; retry with `ddpm-ext publish` or huggingface_hub.upload_folder."
        ) from err
    return str(getattr(commit, "commit_url", commit))


__all__ = [
    "HubPushError",
    "PUBLISH_ALLOW_PATTERNS",
    "PUBLISH_IGNORE_PATTERNS",
    "check_push_access",
    "check_repo_id",
    "push_output_dir",
]
