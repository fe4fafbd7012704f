"""`sdopt bench`: latency per stage and end to end, peak memory, load time and size on disk of sdopt
artifacts and of the peers a user would deploy instead, measured in one run on this machine.

Peers, all from the same model source:
    diffusers      the diffusers pipeline in torch, eager fp32
    ort-fp32       sdopt's plain fp32 ONNX export on ONNX Runtime
    openvino       the same fp32 ONNX in OpenVINO at the device's default precision
    optimum-ort, openvino-int8, sdcpp-f16, sdcpp-q8_0: other tools' own builds (`sdopt.app.bench_peers`), where
                   those tools are installed
Every target runs in its own process, one after the other, so its memory and threads are its own.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sdopt.app import bench_peers
from sdopt.contract.artifact import write_atomically
from sdopt.contract.errors import SdoptError

PEERS = ("diffusers", "ort-fp32", "openvino", "optimum-ort", "openvino-int8", "sdcpp-f16", "sdcpp-q8_0")
DEFAULT_PEERS = ("diffusers", "ort-fp32", "openvino")
PEER_GROUPS = {"all": PEERS, "sdcpp": ("sdcpp-f16", "sdcpp-q8_0")}


@dataclass
class Target:
    name: str
    kind: str  # "artifact" (sdopt runtime) or "diffusers" (torch)
    path: str  # artifact folder, or model source spec for diffusers
    backend: str = "onnxruntime"
    options: dict = field(default_factory=dict)
    denoise: dict = field(default_factory=dict)  # --denoise overrides (sdopt's artifacts only)
    peer: bool = False
    size_bytes: int | None = None
    unet: dict = field(default_factory=dict)  # UNet parameters and MACs where a pruning pass recorded them
    sampling: dict = field(default_factory=dict)  # steps, scheduler, guidance of a distilled few-step artifact
    build: dict = field(default_factory=dict)  # how another tool's peer was built (bench_peers)


@dataclass
class Settings:
    prompt: str
    steps: int
    height: int
    width: int
    guidance: float
    scheduler: str = "ddim"
    threads: int | None = None
    runs: int = 5
    warmup: int = 1
    warmup_steps: int = 2  # a warm-up generation runs every graph at the measured shapes


@dataclass(frozen=True)
class BenchRequest:
    """What `sdopt bench` was asked for, as the command line gave it."""

    artifacts: list
    model: str | None
    backends: str
    peers: str | None
    steps: int | None
    height: int | None
    width: int | None
    runs: int
    warmup: int
    json: Path | None
    plot: Path | None
    device: str | None
    precision: str | None
    scheduler: str | None = None  # default: the model's (ddim for the UNet models, flow-euler for SD3 and FLUX)
    denoise: dict = field(default_factory=dict)
    memory: str = "default"  # the artifacts' memory modes: default, low (`run --low-memory`) or both
    vae_tile: int = 0  # the artifacts' tiled VAE decode (pixels; 0: whole)
    threads: int | None = None  # engine threads of every target

    @property
    def plot_path(self) -> Path | None:
        """--plot, else a PNG beside the JSON (its name with .png) where matplotlib is installed."""
        import importlib.util

        if self.plot or not self.json or importlib.util.find_spec("matplotlib") is None:
            return self.plot
        return self.json.with_suffix(".png")

    def check_outputs(self) -> None:
        """Before any work: the JSON and the plot can be written, and neither would overwrite the other."""
        from sdopt.contract.safe_io import check_output_file, check_outside, same_file

        if self.json is not None:
            check_output_file(self.json, "--json")
            check_outside(self.json, self.artifacts, "--json")
        if self.plot_path is not None:
            check_output_file(self.plot_path, "--plot", ".png")
            check_outside(self.plot_path, self.artifacts, "--plot")
        if self.json is not None and self.plot_path is not None and same_file(self.json, self.plot_path):
            raise SdoptError(f"--json {self.json}: the plot ({'--plot' if self.plot else 'the JSON name with .png'})"
                             f" would be written over it; name the JSON .json or give --plot another file")


def _guided(info: dict) -> float:
    """The artifact's guidance scale, at least 1.5 where guidance is classifier-free: bench measures the guided
    (negative-prompt) batch the model is run with, which a scale of 1 or less would skip."""
    from sdopt.contract.denoiser_spec import guidance_branches

    return max(info["guidance"], 1.5) if guidance_branches(info.get("denoiser")) == 2 else info["guidance"]


def _available_peers(request: BenchRequest, notes: list) -> list[str]:
    """The requested peers (default: DEFAULT_PEERS) less those whose tool or extra is not installed, each left
    out with a note; named peers without the compression extra are an error."""
    import importlib.util

    peers = check_peers(request.peers or ",".join(DEFAULT_PEERS))
    if "openvino" in peers and importlib.util.find_spec("openvino") is None:
        peers.remove("openvino")
        notes.append("note: no openvino package: the openvino peer is left out (pip install 'sdopt[openvino]')")
    for peer in [p for p in peers if p in bench_peers.TOOLS and not bench_peers.installed(p)]:
        peers.remove(peer)
        notes.append(f"note: peer {peer} is left out: it needs {bench_peers.TOOLS[peer][0]} "
                     f"({bench_peers.TOOLS[peer][1]})")
    if peers and importlib.util.find_spec("diffusers") is None:  # the peers are exported from the source model
        if request.peers is not None:
            raise SdoptError("--peers are made from the source model, which needs the compression extra: "
                             "pip install 'sdopt[compress]'")
        peers = []
        notes.append("note: no compression extra: the peers are left out (pip install 'sdopt[compress]')")
    return peers


def _checked_backends(request: BenchRequest) -> list[str]:
    from sdopt.runtime.backends import BACKENDS

    backends = [b for b in request.backends.split(",") if b]
    if request.artifacts and not backends:
        raise SdoptError(f"--backends '{request.backends}': name at least one of " + ", ".join(BACKENDS))
    for backend in backends:
        if backend not in BACKENDS:
            raise SdoptError(f"--backends: unknown backend '{backend}'; choose from " + ", ".join(BACKENDS))
    return backends


def prepare(request: BenchRequest):
    """Check the request before anything is measured; returns (targets, settings, source spec, random weights,
    notes to print)."""
    import importlib.util

    from sdopt.app.evaluate import default_pairs, fp32_export
    from sdopt.contract.artifact import open_artifact
    from sdopt.contract.limits import check_image_size
    from sdopt.contract.manifest import check_vae_tile, size_multiple
    from sdopt.sources.source import DEFAULT_MODEL, source_to_rebuild

    notes = []
    peers = _available_peers(request, notes)
    backends = _checked_backends(request)
    if not request.artifacts and not peers:
        raise SdoptError("nothing to measure: give artifact folders or --peers")
    request.check_outputs()
    if request.plot_path is not None and importlib.util.find_spec("matplotlib") is None:
        raise SdoptError("--plot needs matplotlib: pip install 'sdopt[compress]'")
    # verified here before anything is measured (the timed processes verify what they load again)
    manifests = [open_artifact(folder).manifest for folder in request.artifacts]
    specs = {m["source"]["spec"] for m in manifests}
    if len(specs) > 1 or (request.model and specs and specs != {request.model}):
        raise SdoptError("the artifacts and --model come from different sources: " + ", ".join(
            sorted(specs | {request.model} - {None})))
    spec = source_to_rebuild(manifests[0], request.model, "--model") if manifests else request.model or DEFAULT_MODEL
    for peer, why in [(p, bench_peers.unsupported(p, spec)) for p in peers]:
        if why:
            peers.remove(peer)
            notes.append(f"note: peer {peer} is left out: {why}")
    options = {k: getattr(request, k) for k in ("device", "precision") if getattr(request, k) is not None}
    if options and "openvino" not in backends:
        raise SdoptError(f"--{next(iter(options))} applies to artifacts on --backends openvino")

    plain = [m for m in manifests if not own_sampling(m, None)]  # the peers sample as these: the source's way
    manifest = plain[0] if plain else open_artifact(fp32_export(spec), verify=False).manifest
    info = manifest["pipeline"]
    height, width = request.height or info["height"], request.width or info["width"]
    check_image_size(height, width, size_multiple(info))
    settings = Settings(prompt=default_pairs(manifest, None, 1)[0][0], steps=request.steps or info["steps"],
                        height=height, width=width,
                        guidance=_guided(info),
                        scheduler=request.scheduler or info.get("scheduler", "ddim"), threads=request.threads, runs=request.runs,
                        warmup=request.warmup)
    if request.denoise:
        from sdopt.runtime.denoise import strategy

        for m in manifests:
            strategy(m["pipeline"]["denoise"], request.denoise)
    if request.memory not in MEMORY_MODES:
        raise SdoptError(f"--memory {request.memory}: choose " + ", ".join(MEMORY_MODES))
    if request.threads and "tensorrt" in backends:
        raise SdoptError("--threads applies to the CPU engines (onnxruntime, openvino)")
    if request.vae_tile and not request.artifacts:
        raise SdoptError("--vae-tile applies to artifacts")
    for m in manifests:
        check_vae_tile(request.vae_tile, m["pipeline"])
    targets = plan_targets(request.artifacts, backends, peers, spec, options, request.denoise, request.steps,
                           request.memory, request.vae_tile)
    random_weights = spec.startswith("arch:") or any(m["source"]["random_weights"] for m in manifests)
    if random_weights:
        notes.append(f"note: {spec} has random weights: speed measurements only")
    return targets, settings, spec, random_weights, notes


def deployed_bytes(manifest: dict, backend: str) -> int:
    """Size on disk of the graphs a backend loads: its build where it uses one, else the ONNX files."""
    build = manifest.get("builds", {}).get(backend)
    files = build["files"].values() if build else (f for c in manifest["components"].values()
                                                   for f in c["files"].values())
    return sum(f["bytes"] for f in files)


def own_sampling(manifest: dict, steps: int | None) -> dict:
    """An artifact distilled to another sampler (lcm) runs at its own steps, scheduler and guidance, not the
    source model's: the few-step model against the model as it is deployed."""
    from sdopt.contract.denoiser_spec import read
    from sdopt.contract.sampling import SCHEDULER_FAMILIES

    info = manifest["pipeline"]
    if info.get("scheduler", "ddim") == SCHEDULER_FAMILIES[read(manifest)["scheduler_family"]][0]:
        return {}
    return {"steps": steps or info["steps"], "scheduler": info["scheduler"], "guidance": info["guidance"]}


MEMORY_MODES = ("default", "low", "both")


def plan_targets(artifacts: list[Path], backends: list[str], peers: list[str], spec: str,
                 backend_options: dict, denoise: dict | None = None, steps: int | None = None,
                 memory: str = "default", vae_tile: int = 0) -> list[Target]:
    """sdopt's artifacts on each backend (in each memory mode), then the peers."""
    from sdopt.app.evaluate import unet_size
    from sdopt.contract.artifact import load_manifest

    targets = []
    lows = {"default": [False], "low": [True], "both": [False, True]}[memory]
    for folder in artifacts:
        manifest = load_manifest(folder, verify=False)
        for backend in backends:
            for low in lows:
                options = {**(backend_options if backend == "openvino" else {}),
                           **({"low_memory": True} if low else {}), **({"vae_tile": vae_tile} if vae_tile else {})}
                name = f"{folder.name}, {backend}{', low-memory' if low else ''}"
                targets.append(Target(f"sdopt {manifest['recipe']['name']} ({name})", "artifact", str(folder),
                                      backend, options, dict(denoise or {}),
                                      size_bytes=deployed_bytes(manifest, backend), unet=unet_size(manifest),
                                      sampling=own_sampling(manifest, steps)))
    if "ort-fp32" in peers or "openvino" in peers:
        from sdopt.app.evaluate import fp32_export

        export = fp32_export(spec)
        size = deployed_bytes(load_manifest(export, verify=False), "onnxruntime")
        for peer, backend in (("ort-fp32", "onnxruntime"), ("openvino", "openvino")):
            if peer in peers:
                targets.append(Target(peer, "artifact", str(export), backend, peer=True, size_bytes=size))
    if "diffusers" in peers:
        targets.append(Target("diffusers", "diffusers", spec, peer=True))
    targets += tool_peers([p for p in peers if p in bench_peers.TOOLS], spec)
    order = {name: i for i, name in enumerate(peers)}
    return [t for t in targets if not t.peer] + sorted((t for t in targets if t.peer), key=lambda t: order[t.name])


def tool_peers(peers: list[str], spec: str) -> list[Target]:
    """Other tools' builds of the source model (built here the first time, then cached)."""
    targets = []
    for peer in peers:
        folder = bench_peers.prepare(peer, spec)
        if peer in bench_peers.SDCPP_WEIGHTS:
            targets.append(Target(peer, "sdcpp", str(folder), "stable-diffusion.cpp",
                                  {"weights": bench_peers.SDCPP_WEIGHTS[peer]}, peer=True,
                                  build=bench_peers.build_record(folder, peer)))
            continue
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.suffix in (".onnx", ".bin",
                                                                                              ".onnx_data", ".xml"))
        targets.append(Target(peer, peer, str(folder), "onnxruntime" if peer == "optimum-ort" else "openvino",
                              peer=True, size_bytes=size, build=bench_peers.build_record(folder)))
    return targets


def run_target(target: Target, settings: Settings) -> dict:
    """Measure one target in a child process; a failure becomes {"error": ...} for that row."""
    with tempfile.TemporaryDirectory(prefix="sdopt-bench-") as tmp:
        spec_file, result_file = Path(tmp) / "target.json", Path(tmp) / "result.json"
        spec_file.write_text(json.dumps({"target": asdict(target), "settings": {**asdict(settings),
                                                                                **target.sampling}}))
        proc = subprocess.run([sys.executable, "-m", "sdopt.app.bench_worker", str(spec_file), str(result_file)],
                              stdout=subprocess.DEVNULL)
        if not result_file.is_file():
            return {"error": f"the benchmark process ended with exit code {proc.returncode} (out of memory?)"}
        return json.loads(result_file.read_text())


def summarize(target: Target, measured: dict) -> dict:
    row = {"name": target.name, "kind": target.kind, "path": target.path, "backend": target.backend,
           "options": target.options, "peer": target.peer, "size_bytes": target.size_bytes, **target.unet,
           **({"sampling": target.sampling} if target.sampling else {}),
           **({"build": target.build} if target.build else {})}
    if "error" in measured:
        return {**row, "error": measured["error"]}
    runs = measured["runs"]
    stages = {"end_to_end": [r["end_to_end"] for r in runs],
              "text_encoder": [sum(r.get("text_encoder", [])) for r in runs],
              "unet": [t for r in runs for t in r.get("unet", [])],  # per call (full and shallow alike)
              "unet_image": [sum(r.get("unet", [])) for r in runs],  # every denoiser call of one image
              "vae_decode": [sum(r.get("vae_decode", [])) for r in runs]}
    timed = {key for r in runs for key in r}  # a tool without stage hooks (stable-diffusion.cpp) times none
    stats = {name: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v), "n": len(v)}
             for name, v in stages.items() if v and (name == "end_to_end" or name.split("_image")[0] in timed)}
    if measured.get("size_bytes"):
        row["size_bytes"] = measured["size_bytes"]
    return {**row, "load_s": measured["load_s"], "warmup_s": measured["warmup_s"],
            "peak_rss_bytes": measured["peak_rss_bytes"],
            "peak_rss_stage_bytes": measured.get("peak_rss_stage_bytes", {}), "stages": stats, "raw_runs": runs}


def with_speedups(rows: list[dict]) -> list[dict]:
    """Each row's end-to-end speedup over each peer (peer median / row median)."""
    peers = {r["name"]: r["stages"]["end_to_end"]["median_s"] for r in rows if r["peer"] and "error" not in r}
    for r in rows:
        if "error" not in r:
            r["speedup"] = {p: t / r["stages"]["end_to_end"]["median_s"] for p, t in peers.items()}
    return rows


def machine() -> dict:
    info = {"system": platform.system(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "processor": platform.processor()}
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        info["processor"] = next(l.split(":", 1)[1].strip() for l in lines if l.startswith("model name"))
        flags = next(l.split(":", 1)[1].split() for l in lines if l.startswith("flags"))
        info["isa"] = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")
                       if f in flags]
    except (OSError, StopIteration):
        pass
    return info


TABLE_WIDTH = 120  # the compact table fits a 120-column terminal; --wide has every column


def format_table(result: dict, wide: bool = False) -> str:
    s = result["settings"]
    header = (f"{result['source']}{' (random weights: speed only)' if result['random_weights'] else ''}, "
              f"{s['width']}x{s['height']}, {s['steps']} {s.get('scheduler', 'ddim')} steps, guidance {s['guidance']} "
              f"(UNet batch 2)\n"
              f"median of {s['runs']} runs after {s['warmup']} warm-up; "
              f"{result['machine'].get('processor')}, {result['machine']['cpus']} CPUs")
    peers = [r["name"] for r in result["rows"] if r["peer"] and "error" not in r]
    if not wide:
        return _compact_table(result, header, peers)
    columns = ["target", "end-to-end s", "min-max s", "text enc s", "UNet/step s", "UNet/img s", "VAE s", "load s",
               "warm-up s", "peak RSS GB", "load/enc/UNet/VAE GB", "size GB"] + [f"x {p}" for p in peers]
    lines = _cells(result, lambda r, st: [
        *_stage_cells(st, ("text_encoder", "unet", "unet_image", "vae_decode")), f"{r['load_s']:.1f}",
        f"{r['warmup_s']:.1f}", f"{r['peak_rss_bytes'] / 1e9:.2f}", stage_peaks(r.get("peak_rss_stage_bytes", {})),
        _size(r), *(f"{r['speedup'][p]:.2f}" for p in peers)])
    return "\n".join([header, *_aligned(columns, lines)] + _footnotes(result))


def _cells(result: dict, cells_of) -> list[list[str]]:
    """A row of cells per target: its name, end-to-end median and range, then `cells_of(row, stages)`; a failed
    target's row says why."""
    lines = []
    for r in result["rows"]:
        if "error" in r:
            lines.append([r["name"], "failed: " + r["error"]])
            continue
        st = r["stages"]
        lines.append([r["name"], f"{st['end_to_end']['median_s']:.2f}",
                      f"{st['end_to_end']['min_s']:.2f}-{st['end_to_end']['max_s']:.2f}", *cells_of(r, st)])
    return lines


def _stage_cells(stages: dict, names) -> list[str]:
    return [f"{stages[k]['median_s']:.3f}" if k in stages else "-" for k in names]


def _size(row: dict) -> str:
    return f"{row['size_bytes'] / 1e9:.2f}" if row["size_bytes"] else "-"


def _compact_table(result: dict, header: str, peers: list[str]) -> str:
    """End-to-end, UNet per step, VAE, load, peak memory, size and the speedup over the first peer, in at most
    TABLE_WIDTH columns (long target names are shortened)."""
    reference = peers[0] if peers else None
    columns = ["target", "e2e s", "min-max", "UNet/step", "VAE s", "load s", "RSS GB", "size GB"] \
        + ([f"x {reference}"] if reference else [])
    lines = _cells(result, lambda r, st: [
        *_stage_cells(st, ("unet", "vae_decode")), f"{r['load_s']:.1f}", f"{r['peak_rss_bytes'] / 1e9:.2f}", _size(r),
        *([f"{r['speedup'][reference]:.2f}"] if reference else [])])
    others = sum(max([len(columns[i]), *(len(c[i]) for c in lines if len(c) == len(columns))]) + 2
                 for i in range(1, len(columns)))
    room = max(TABLE_WIDTH - others, 16)
    for cells in lines:
        if len(cells[0]) > room:
            cells[0] = cells[0][:room - 1] + "…"
    note = "(times in s, RSS: peak resident set; --wide adds text encoder, UNet per image, warm-up, memory per " \
           "stage)"
    return "\n".join([header, *_aligned(columns, lines), note] + _footnotes(result))


def _aligned(columns: list[str], lines: list[list[str]]) -> list[str]:
    widths = [max([len(columns[i]), *(len(c[i]) for c in lines if len(c) == len(columns))])
              for i in range(len(columns))]

    def fmt(cells):
        if len(cells) != len(columns):
            return f"{cells[0]:<{widths[0]}}  {cells[1]}"
        return "  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths)))
    return [fmt(columns)] + [fmt(c) for c in lines]


def _footnotes(result: dict) -> list[str]:
    own = [f"{r['name']}: {r['sampling']['steps']} {r['sampling']['scheduler']} steps, guidance "
           f"{r['sampling']['guidance']} embedded (UNet batch 1)" for r in result["rows"] if r.get("sampling")]
    pruned = [f"{r['name']}: UNet {r['unet_parameters'] / 1e6:.0f} M parameters "
              f"({r['reference_unet_parameters'] / 1e6:.0f} M unpruned), {r['unet_macs'] / 1e9:.1f} GMACs per guided step ({r['reference_unet_macs'] / 1e9:.1f})"
              for r in result["rows"] if "unet_parameters" in r and "reference_unet_parameters" in r]
    built = [f"{r['name']}: {r['build']['how']}" + (f", built in {r['build']['seconds']:.0f} s"
                                                    if "seconds" in r["build"] else "")
             for r in result["rows"] if r.get("build")]
    return own + pruned + built


MEMORY_STAGES = ("load", "text_encoder", "unet", "vae_decode")


def stage_peaks(peaks: dict) -> str:
    """Peak resident memory of loading, text encoding, denoising and decoding, in GB ("-" where unknown)."""
    return "/".join(f"{peaks[s] / 1e9:.2f}" if peaks.get(s) else "-" for s in MEMORY_STAGES)


def write_plot(result: dict, path: Path) -> bool:
    """Stacked bars: end-to-end median per target, split into its stages; False (nothing written) when no
    target was measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if "error" not in r]
    if not rows:
        return False
    steps = result["settings"]["steps"]
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(rows) + 2.2))
    names = [r["name"] for r in rows][::-1]
    left = [0.0] * len(rows)
    stages = (("text encoder", "text_encoder"), ("UNet", "unet_image"), ("VAE decode", "vae_decode"))
    parts = {label: [r["stages"].get(stage, {}).get("median_s", 0.0) for r in rows]  # 0: timed end to end only
             for label, stage in stages}
    parts["other or not split"] = [max(r["stages"]["end_to_end"]["median_s"] - sum(p[i] for p in parts.values()), 0.0)
                                   for i, r in enumerate(rows)]
    for label, values in parts.items():
        values = values[::-1]
        ax.barh(names, values, left=left, label=label)
        left = [a + b for a, b in zip(left, values)]
    for y, r in enumerate(rows[::-1]):
        ax.text(left[y], y, f" {r['stages']['end_to_end']['median_s']:.2f} s", va="center", fontsize=8)
    s = result["settings"]
    ax.set_xlim(0, max(left) * 1.15)
    ax.set_xlabel("seconds per image (median)")
    ax.set_title(f"{result['source']}{' (random weights)' if result['random_weights'] else ''}, "
                 f"{s['width']}x{s['height']}, {steps} steps, guided", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=len(parts), frameon=False)
    fig.tight_layout()
    write_atomically(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return True


def write_json(result: dict, path: Path) -> None:
    write_atomically(path, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=2) + "\n"))


def bench(targets: list[Target], settings: Settings, source: str, random_weights: bool) -> dict:
    rows = [summarize(t, run_target(t, settings)) for t in targets]
    return {"benchmark": "sdopt bench", "source": source, "random_weights": random_weights,
            "settings": asdict(settings), "machine": machine(), "rows": with_speedups(rows)}


def check_peers(text: str) -> list[str]:
    peers = [q for p in text.split(",") if p and p != "none" for q in PEER_GROUPS.get(p, (p,))]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise SdoptError(f"--peers: unknown peer '{unknown[0]}'; choose from " + ", ".join(PEERS) + ", "
                         + ", ".join(PEER_GROUPS) + " or none")
    return list(dict.fromkeys(peers))
