import pytest

from mmesim.profile import ModelProfile

from mmesim.units import MiB  # noqa: F401  (tests import it from here)


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
