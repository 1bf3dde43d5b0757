import pytest

from mmesim.profile import ModelProfile

from mmesim.units import MiB  # noqa: F401  (tests import it from here)


def load_example(name: str):
    """examples/<name>.py as a module (the examples are scripts, not a package)."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parent.parent / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_profile(name="tiny", model=None, mem_mib=1000, load_s=2.0, unload_s=0.5, s1=0.010, cv=0.0,
                 max_batch=8, overlap=0.0, max_inflight=None, gpu="t4", payload=1000, decode=0.0, **kw) -> ModelProfile:
    """A hand-made profile with round numbers, so expected results can be worked out by hand."""
    return ModelProfile(
        name=name, model=model or name, framework="pytorch", gpu=gpu, artifact_bytes=100_000_000,
        gpu_memory_bytes=mem_mib * MiB, baseline_gpu_bytes=kw.pop("baseline_mib", 1000) * MiB, load_s=load_s,
        unload_s=unload_s,
        service=[{"batch": 1, "seconds": s1, "cv": cv}] + ([{"batch": max_batch, "seconds": s1 * 2, "cv": cv}]
                                                          if max_batch > 1 else []),
        input_bytes=payload, decode_s_per_byte=decode, gpu_overlap=overlap, max_inflight=max_inflight,
        triton={"max_batch_size": max_batch if max_batch > 1 else 0}, provenance={"method": "hand", "source": "tests"}, **kw)


@pytest.fixture
def profile():
    return make_profile()


# --- the real tritonserver: one guard, one server for the session ---------------------------
def _no_tritonserver() -> str | None:
    """Why tests marked ``triton`` cannot run here, or None when they can."""
    try:
        from mmesim.errors import MissingPiece
        from mmesim.triton.local import find_tritonserver
        find_tritonserver()
    except (ImportError, MissingPiece) as exc:
        return f"no tritonserver (install mmesim[triton]): {exc}"
    return None


def pytest_collection_modifyitems(config, items):
    """Tests marked ``triton`` are skipped, with the reason, where there is no tritonserver."""
    marked = [item for item in items if item.get_closest_marker("triton")]
    why = _no_tritonserver() if marked else None
    if why:
        for item in marked:
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory):
    """One tritonserver (SageMaker MME mode, 127.0.0.1) per test process (each xdist worker
    has its own) shared by the tests that only load, invoke and unload models in it: each
    uses names of its own and unloads what it loaded. Tests of starting and stopping the
    server itself start their own. Its models log their executions to ``options.exec_log``."""
    from mmesim.triton.args import ServerOptions
    from mmesim.triton.local import LocalTriton
    work = tmp_path_factory.mktemp("triton-session")
    (work / "executions").mkdir()          # the models log each execution there (mmesim.triton.execlog)
    with LocalTriton(ServerOptions(exec_log=str(work / "executions")), workdir=work) as server:
        yield server


def loaded_copies(server, work, model: str, copies: int = 2):
    """``copies`` copies of a built-in ``model`` (Python backend, one thread) loaded into
    ``server`` through the MME protocol, as ``<model>-v<i>``; unloaded when the generator
    ends. For module fixtures over the session's server."""
    from mmesim.calibrate.maxmodels import mme_copy_loader
    from mmesim.triton.client import MMEClient
    from mmesim.triton.packaging import package
    packaged = package(model, "python", work / "artifact", cpu_threads=1)
    client = MMEClient(server.sagemaker_url)
    load = mme_copy_loader(client, packaged, server, work / "copies", model)
    for i in range(copies):
        load(i)
    yield server
    for i in range(copies):
        client.unload(f"{model}-v{i}")
    client.close()
