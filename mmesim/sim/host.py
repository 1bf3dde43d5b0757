"""One instance's host, as a load, a download and a request see it: its vCPUs (untar,
deserialising and request decoding share them: one core each while there are enough,
time-sliced beyond), the cache volume, the network, PCIe, and the processor that executes
the models (the GPU, or on a CPU-only host the same cores as everything else).

The simulator's instances and the emulator's virtual backend both spend their time here,
so a load on either costs the same (mmesim.endpoint.PlatformCosts says what each part is)."""

from __future__ import annotations

from mmesim.catalog import CPU
from mmesim.sim.cores import Cores, PackedCores
from mmesim.sim.events import after
from mmesim.sim.gpu import GPU
from mmesim.sim.transfer import SharedRate


def request_handling(profile, payload_bytes: int, cpu_speed: float, shared_cores: bool):
    """(CPU seconds, front-end factor or None) of a request's handling on a host of ``cpu_speed``:
    the profile's request cost at that speed; on shared cores (a CPU-only host) without the
    model's threads, which run beside the execution (ModelServer), and with the factor by the
    front end's idle time where the profile holds it (``Host.decode``). The simulator and the
    emulator's virtual backend both ask here."""
    seconds = profile.handling_s(payload_bytes, model_threads=not shared_cores) * profile.host_cpu_speed / cpu_speed
    return seconds, (profile.frontend_factor if shared_cores and profile.frontend_by_idle else None)


class Host:
    def __init__(self, env, itype, gpu, costs, wakeups=None, rng=None):
        """``wakeups``: how the host places woken threads (a WakePlacement, CPU-only hosts;
        ``rng`` draws which displace a running one); None: on an idle core at once."""
        self.env, self.costs = env, costs
        # a CPU-only host (instance type local) computes everything on one pool of cores
        if gpu.key != CPU:
            self.cores = None
        elif wakeups is not None and wakeups.displaces:
            self.cores = PackedCores(env, itype.vcpus, wakeups, rng)
        else:
            self.cores = Cores(env, itype.vcpus)
        self.processor = self.cores if self.cores is not None else GPU(env)
        self.vcpus = SharedRate(env, itype.vcpus, 1.0)     # CPU-seconds, one core per thread at most
        self.network = SharedRate(env, itype.network_bytes_per_s,
                                  costs.s3_streams_per_download * costs.s3_stream_bytes_per_s)
        disk_rate = itype.disk_read_bytes_per_s
        self.disk = SharedRate(env, disk_rate) if disk_rate else None
        self.pcie = SharedRate(env, gpu.pcie_gbs * 1e9 * costs.h2d_share) if gpu.pcie_gbs else None
        self.cpu_speed = itype.cpu_speed
        self.cpu_busy_s = 0.0
        self._decode_on = (self.cores if self.cores is not None else self.vcpus).run   # bound once: per request
        self._front_at = 0.0     # when the server's front end last had work: a request in, an answer out

    def on_cpu(self, seconds: float, arg, callback) -> None:
        """``seconds`` of one thread's work on the host's CPUs, then ``callback(arg, elapsed)``."""
        self.cpu_busy_s += seconds
        if seconds <= 0:
            callback(arg, 0.0)
        elif self.cores is not None:
            began = self.env.now
            self.cores.run(seconds, 1, lambda a: callback(a, self.env.now - began), arg)
        else:
            self.vcpus.start(seconds, arg, callback)

    def decode(self, seconds: float, arg, callback, frontend=None) -> None:
        """A request's handling and parsing on one server thread, competing with loads and
        downloads for the same CPUs; then ``callback(arg)``. ``frontend``: on shared cores, the
        handling's factor by the seconds the server's front end has been idle
        (``ModelProfile.frontend_factor``): its threads and caches cool between requests as a
        model's do (tiny-bert: 0.13 ms of CPU a request back to back, 0.3 after 10 ms idle, 0.5-0.6
        after 50 ms), so a busy server handles a request for less than one paced apart."""
        now = self.env.now
        if frontend is not None:
            seconds *= frontend(now - self._front_at)
        self._front_at = now
        if seconds <= 0:              # nothing to compute (a profile without request costs)
            callback(arg)
            return
        self.cpu_busy_s += seconds
        self._decode_on(seconds, 1, callback, arg)

    def answered(self) -> None:
        """An answer leaves: the front end sends it (its last work before an idle spell)."""
        self._front_at = self.env.now

    def cpu_busy_until_now(self) -> float:
        """Host CPU seconds used so far (on a CPU-only host: every core-second, the models' too)."""
        return self.cores.core_s_until_now() if self.cores is not None else self.cpu_busy_s

    # -- a download: S3's first byte, the artifact over the shared network, untar on one vCPU
    def download(self, nbytes: int, arg, callback) -> None:
        """Then ``callback(arg, seconds of its last part)``."""
        after(self.env, self.costs.s3_first_byte_s, (nbytes, arg, callback), self._first_byte)

    def _first_byte(self, ev) -> None:
        self.network.start(ev.value[0], ev.value, self._received)

    def _received(self, job, _s) -> None:
        nbytes, arg, callback = job
        self.on_cpu(nbytes / (self.costs.untar_bytes_per_s * self.cpu_speed), arg, callback)

    # -- a load on one load thread: read the artifact, deserialise on one vCPU, copy to the GPU
    def load(self, profile, arg, callback) -> None:
        """Then ``callback(arg, seconds of its last part)``."""
        job = (profile, arg, callback)
        if self.disk is not None:
            self.disk.start(profile.artifact_bytes, job, self._read)
        else:
            self._read(job, 0.0)

    def _read(self, job, _s) -> None:
        self.on_cpu(self.deserialise_s(job[0]), job, self._deserialised)

    def _deserialised(self, job, _s) -> None:
        profile, arg, callback = job
        if self.pcie is not None:
            self.pcie.start(profile.gpu_memory_bytes, arg, callback)
        else:
            callback(arg, 0.0)

    def deserialise_s(self, profile) -> float:
        """Host CPU seconds of one load: ``load_s`` less its read and copy at this host's
        rates (alone), moved to this host's CPU speed as request decoding is."""
        io = 0.0
        if self.disk is not None:
            io += profile.artifact_bytes / self.disk.total
        if self.pcie is not None:
            io += profile.gpu_memory_bytes / self.pcie.total
        return max(0.0, profile.load_s - io) * profile.host_cpu_speed / self.cpu_speed
