"""Training options: one typed definition per option generates the parser, --help-training and the validation; the
vocabularies equal their owners'; the command line starts without torch; how training processes are launched."""

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ddpm_ext.training import launch
from ddpm_ext.training.config import TrainingConfig, _choices, build_arg_parser, owned_vocabularies

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers", "accelerate", "datasets", "transformers")
FIELDS = {f.name: f for f in dataclasses.fields(TrainingConfig)}


def test_training_vocabularies_equal_the_modules_that_own_them():
    owned = owned_vocabularies()
    assert set(owned) == {"prediction_type", "variance_type", "ddpm_beta_schedule", "loss_type", "timestep_sampler",
                          "lr_scheduler", "model_preset"}
    for name, allowed in owned.items():
        assert _choices(FIELDS[name].type) == allowed, name
    assert "laplace" in _choices(FIELDS["ddpm_beta_schedule"].type)  # the scheduler's schedule, once refused here
    TrainingConfig(ddpm_beta_schedule="laplace").validate()


def test_a_vocabulary_drifted_from_its_owner_is_refused(monkeypatch):
    from ddpm_ext.training import config

    monkeypatch.setattr(config, "owned_vocabularies", lambda: {"ddpm_beta_schedule": ("linear",)})
    with pytest.raises(ValueError, match="ddpm_beta_schedule='laplace' is not supported; allowed values: linear$"):
        TrainingConfig(ddpm_beta_schedule="laplace").validate()
    TrainingConfig(ddpm_beta_schedule="laplace").validate(check_owners=False)  # the cheap pre-launch check


def test_help_training_describes_every_flag_with_its_default_once(capsys):
    parser = build_arg_parser()
    actions = {a.dest: a for a in parser._actions}
    for name, f in FIELDS.items():
        if f.metadata.get("hidden"):
            continue
        help_text = actions[name].help
        assert help_text.startswith(f.metadata["help"].replace("%", "%%")), name
        assert help_text.count("%(default)s") == 1, name
        assert f.metadata["help"].strip(), name
    parser.print_help()
    out = capsys.readouterr().out
    flat = " ".join(out.split())
    assert "(default: None) (default: None)" not in flat and "(default: False) (default: False)" not in flat
    assert flat.count("(default:") == sum(not f.metadata.get("hidden") for f in FIELDS.values())
    assert "the noise schedule (default: linear)" in flat
    assert "{linear,scaled_linear,squaredcos_cap_v2,sigmoid,laplace}" in out


def test_debug_options_are_accepted_but_not_listed(capsys):
    parser = build_arg_parser()
    parser.print_help()
    out = capsys.readouterr().out
    assert "log_batch_indices" not in out and "local_rank" not in out
    args = parser.parse_args(["--log_batch_indices"])
    assert TrainingConfig.from_args(args).log_batch_indices is True


def test_the_parser_is_generated_from_the_definitions():
    parser = build_arg_parser()
    defaults = vars(parser.parse_args([]))
    assert {k: v for k, v in defaults.items() if k in FIELDS} == dataclasses.asdict(TrainingConfig())
    args = parser.parse_args(["--channels", "3", "--snr_gamma", "none", "--max_train_steps", "7",
                              "--no-use_fused_adam", "--learning_rate", "2e-3"])
    config = TrainingConfig.from_args(args)
    got = (config.channels, config.snr_gamma, config.max_train_steps, config.use_fused_adam, config.learning_rate)
    assert got == (3, None, 7, False, 2e-3)
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--loss_type", "mse"])
    assert exc.value.code == 2


@pytest.mark.parametrize("name", [n for n, f in FIELDS.items() if f.metadata.get("minimum") is not None])
def test_each_least_value_in_the_definitions_is_enforced(name):
    least = FIELDS[name].metadata["minimum"]
    overrides = {name: least}
    if name == "ddpm_num_steps":
        overrides["ddpm_num_inference_steps"] = least
    TrainingConfig(**overrides).validate(check_owners=False)
    with pytest.raises(ValueError, match=f"^{name}={least - 1} is not allowed; expected an integer >= {least}$"):
        TrainingConfig(**{name: least - 1}).validate(check_owners=False)


@pytest.mark.parametrize("name", [n for n, f in FIELDS.items() if _choices(f.type) is not None])
def test_each_literal_field_refuses_values_outside_its_choices(name):
    allowed = ", ".join(map(str, _choices(FIELDS[name].type)))
    with pytest.raises(ValueError, match=f"^{name}='nope' is not supported; allowed values: {allowed}$"):
        TrainingConfig(**{name: "nope"}).validate(check_owners=False)


def test_the_command_line_imports_no_heavy_library():
    code = (
        "import sys, contextlib, io\n"
        "import ddpm_ext, ddpm_ext.training, ddpm_ext.training.config, ddpm_ext.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert ddpm_ext.cli.main(['train', '--help-training']) == 0\n"
        "    try:\n"
        "        ddpm_ext.cli.main(['--help'])\n"
        "    except SystemExit:\n"
        f"        pass\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_lazy_names_resolve_to_the_real_objects():
    import ddpm_ext
    import ddpm_ext.training as training
    from ddpm_ext.pipelines.pipeline_ddpm_ext import DDPMExtPipeline
    from ddpm_ext.schedulers.scheduling_ddpm_ext import DDPMExtScheduler

    assert ddpm_ext.DDPMExtPipeline is DDPMExtPipeline and ddpm_ext.DDPMExtScheduler is DDPMExtScheduler
    assert DDPMExtPipeline._default_scheduler_class is DDPMExtScheduler
    assert set(ddpm_ext.__all__) <= set(dir(ddpm_ext)) and set(training.__all__) <= set(dir(training))
    for name in training.__all__:
        assert getattr(training, name) is not None
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        ddpm_ext.nope  # noqa: B018


# ----------------------------------------------------------------------------- how training processes start
def _no_gpu():
    import torch

    return not torch.cuda.is_available()


@pytest.mark.skipif(not _no_gpu(), reason="the refusal is for machines without GPUs")
@pytest.mark.parametrize("args", [["--multi_gpu", "--num_processes", "4"], ["--num_processes=2"], ["--multi_gpu"]])
def test_several_processes_without_gpus_are_refused_unless_asked_for_on_the_cpu(args):
    with pytest.raises(ValueError, match="has no GPU: accelerate would start unconnected copies.*ACCELERATE_USE_CPU"):
        launch.check_launcher_args(args, environ={})
    launch.check_launcher_args(args, environ={"ACCELERATE_USE_CPU": "1"})
    launch.check_launcher_args(["--num_processes", "1"], environ={})
    assert launch.unconnected_copies_error({"WORLD_SIZE": "4"}).startswith("the launcher started 4 processes")
    assert launch.unconnected_copies_error({"WORLD_SIZE": "4", "ACCELERATE_USE_CPU": "true"}) is None
    assert launch.unconnected_copies_error({}) is None


def test_cpu_threads_are_raised_only_for_accelerates_default_of_one(tmp_path, monkeypatch):
    cpus = len(os.sched_getaffinity(0))
    if cpus < 2:
        pytest.skip("one CPU: nothing to raise")
    monkeypatch.setattr(launch, "_launcher_chose_threads", lambda pid: False)
    by_accelerate = {"OMP_NUM_THREADS": "1", "ACCELERATE_DYNAMO_BACKEND": "NO", "ACCELERATE_USE_CPU": "True"}
    assert launch.cpu_threads_for_one_process(by_accelerate) == cpus
    assert launch.cpu_threads_for_one_process({**by_accelerate, "WORLD_SIZE": "2"}) is None
    assert launch.cpu_threads_for_one_process({**by_accelerate, "OMP_NUM_THREADS": "2"}) is None
    assert launch.cpu_threads_for_one_process({"OMP_NUM_THREADS": "1"}) is None  # not started by accelerate
    monkeypatch.setattr(launch, "_launcher_chose_threads", lambda pid: True)  # the user gave the launcher a count
    assert launch.cpu_threads_for_one_process(by_accelerate) is None


def test_the_launchers_own_thread_choice_is_read_from_proc():
    if not os.path.exists("/proc/self/environ"):
        pytest.skip("no /proc")
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    for extra_env, extra_args, expected in (({}, [], False), ({"OMP_NUM_THREADS": "1"}, [], True),
                                            ({}, ["--num_cpu_threads_per_process", "1"], True)):
        proc = subprocess.Popen([*sleeper, *extra_args], env={**env, **extra_env})
        try:
            deadline = time.monotonic() + 60
            while not Path(f"/proc/{proc.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
                time.sleep(0.05)  # until the new program has replaced the fork
            assert launch._launcher_chose_threads(proc.pid) is expected
        finally:
            proc.kill()
            proc.wait()
