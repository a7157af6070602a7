# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""Publishing to the Hugging Face Hub: the saved pipeline, model card and sample grid only.

Every push path ends in `upload_pipeline_folder` with the one allow-list (`PUBLISH_ALLOW_PATTERNS`):
`DDPMExtPipeline.push_to_hub` (`push_pipeline`), `save_pretrained(..., push_to_hub=True)` (`push_saved_pipeline`),
training's `--push_to_hub` and `ddpm-ext publish` (`push_output_dir`). The pipeline module itself stays
self-contained (it is copied into saved folders); the installed package points it here (`ddpm_ext.pipelines`).
"""

import os
import tempfile
from typing import Optional, Union

from huggingface_hub import CommitInfo, create_branch, create_repo, upload_folder
from huggingface_hub.utils import validate_repo_id

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


def upload_pipeline_folder(
    folder: Union[str, os.PathLike],
    repo_id: str,
    *,
    token: Optional[str] = None,
    private: Optional[bool] = None,
    revision: Optional[str] = None,
    create_pr: bool = False,
    commit_message: str = "Upload DDPMExtPipeline",
    card_for=None,
) -> CommitInfo:
    """
    The one upload of every push path: check the repo id (no request for a bad one), create the repo (`exist_ok`)
    and the `revision` branch, write a model card if asked and missing, and upload only `PUBLISH_ALLOW_PATTERNS` of
    `folder` (checkpoints, optimizer and RNG states, logs, metrics and any other file stay local). Client errors
    (`HfHubHTTPError`, `HFValidationError`, ...) propagate unchanged.

    Args:
        folder (`str` or `os.PathLike`): a saved pipeline folder.
        repo_id (`str`): "namespace/name" or "name".
        token (`str`, *optional*): Hub token; defaults to the logged-in one.
        private (`bool`, *optional*): create the repo private (an existing repo keeps its visibility).
        revision (`str`, *optional*): branch to commit to; created if it does not exist.
        create_pr (`bool`, defaults to `False`): open a pull request instead of committing.
        commit_message (`str`): the commit message.
        card_for (`DDPMExtPipeline`, *optional*): write `README.md` for this pipeline (`reporting.model_card`)
            when `folder` has none.

    Returns:
        `huggingface_hub.CommitInfo`: the commit (`.oid`, `.commit_url`).
    """
    validate_repo_id(repo_id)
    repo_id = create_repo(repo_id, token=token, private=private, exist_ok=True, repo_type="model").repo_id
    if revision is not None and revision != "main":
        create_branch(repo_id, branch=revision, token=token, exist_ok=True)
    card = os.path.join(folder, "README.md")
    if card_for is not None and not os.path.exists(card):  # as diffusers does, a pushed pipeline gets a model card
        from .reporting import model_card

        id2label = getattr(card_for, "id2label", None) or None  # a class-conditional pipeline's classes
        model_card(repo_id, card_for.unet, card_for.scheduler.config, id2label=id2label).save(card)
    return upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        token=token,
        revision=revision,
        commit_message=commit_message,
        create_pr=create_pr,
        allow_patterns=PUBLISH_ALLOW_PATTERNS,
        ignore_patterns=PUBLISH_IGNORE_PATTERNS,
    )


def push_pipeline(
    pipe,
    repo_id: str,
    commit_message: Optional[str] = None,
    private: Optional[bool] = None,
    token: Optional[str] = None,
    create_pr: bool = False,
    safe_serialization: bool = True,
    variant: Optional[str] = None,
    revision: Optional[str] = None,
    model_card: Optional[str] = None,
) -> CommitInfo:
    """
    `DDPMExtPipeline.push_to_hub` with ddpm-ext installed (see its arguments): save into a temporary folder, add the
    model card (the `model_card` text, or `reporting.model_card`) and `upload_pipeline_folder` it.
    """
    validate_repo_id(repo_id)  # before saving anything
    with tempfile.TemporaryDirectory() as tmp:
        pipe.save_pretrained(tmp, safe_serialization=safe_serialization, variant=variant)
        if model_card is not None:
            with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as f:
                f.write(model_card)
        return upload_pipeline_folder(
            tmp, repo_id, token=token, private=private, revision=revision, create_pr=create_pr,
            commit_message=commit_message or f"Upload {type(pipe).__name__}", card_for=pipe,
        )


def push_saved_pipeline(pipe, save_directory: Union[str, os.PathLike], **kwargs) -> CommitInfo:
    """The upload of `DDPMExtPipeline.save_pretrained(save_directory, push_to_hub=True, **kwargs)` with ddpm-ext
    installed: `repo_id` (defaults to the folder's name), `token`, `private`, `commit_message`, `create_pr` as in
    diffusers; the folder's `README.md` is kept, or written if missing."""
    repo_id = kwargs.pop("repo_id", str(save_directory).rstrip(os.sep).split(os.sep)[-1])
    return upload_pipeline_folder(
        save_directory, repo_id, token=kwargs.get("token"), private=kwargs.get("private"),
        create_pr=kwargs.get("create_pr", False),
        commit_message=kwargs.get("commit_message") or f"Upload {type(pipe).__name__}", card_for=pipe,
    )


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
        `ValueError`: `output_dir` is not a saved pipeline, or `repo_id` is not a valid repo id (no request made).
        `HubPushError`: creating the repo or uploading failed (the message says why).
    """
    if not os.path.isfile(os.path.join(output_dir, "model_index.json")):
        raise ValueError(
            f"output_dir={output_dir!r} holds no saved pipeline (model_index.json missing); train or save first"
        )
    check_repo_id(repo_id, "repo_id")
    try:
        commit = upload_pipeline_folder(
            output_dir, repo_id, token=token, private=private, revision=revision, commit_message=commit_message
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
    "push_pipeline",
    "push_saved_pipeline",
    "upload_pipeline_folder",
]
