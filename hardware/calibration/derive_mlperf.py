"""Derive hardware/calibration/mlperf_offline.csv from the MLPerf Inference results repositories.

Source: MLCommons, mlcommons/inference_results_v4.1 and mlcommons/inference_results_v5.1 (Apache-2.0;
audited closed-division results). The v5.0 repository could not be read here (its snapshot is over the
file-count limit of the tool that fetched the others), so v5.0 rows are absent, not skipped on purpose.

What is read, per closed-division Llama-2-70B Offline result (``llama2-70b-99`` and ``llama2-70b-99.9``
are audited at two accuracy targets; where a submitter filed one run for both, its figures are identical
and the ``99.9`` row is marked ``excluded`` as a repeat, so each measurement counts once):

- ``closed/<submitter>/results/<system>/<benchmark>/Offline/performance/run_1/mlperf_log_summary.txt``:
  "Tokens per second" (the metric) and "Samples per second" (their ratio is the run's mean output
  length; the run is 24,576-sample draws of the OpenOrca subset, all queued at once), and VALID;
- ``closed/<submitter>/systems/<system>.json``: accelerator, accelerators per node, nodes, software;
- the submitter's engine configuration (tensor / pipeline parallel degree, batch cap, token budget,
  KV-cache share and dtype, weight precision), from the first file of these that exists:
  TensorRT-LLM v5.1: ``closed/<submitter>/configs/<system>/Offline/llama2-70b.py`` (``EXPORTS``, the
  entry for the run's accuracy target and power setting), else NVIDIA's file for that accelerator;
  TensorRT-LLM v4.1: ``closed/<submitter>/configs/llama2-70b/Offline/__init__.py`` (the config class
  of that accelerator, its base classes, and ``configs/llama2-70b/__init__.py`` for the token budget);
  vLLM on ROCm v5.1: ``closed/<submitter>/code/<benchmark>/harness_llm/models/llama2-70b/offline_<gpu>.yaml``
  (AMD's, else the submitter's own copy); vLLM on ROCm v4.1: AMD's
  ``code/<benchmark>/test_VllmFp8/test_VllmFp8_Offline_perf.sh`` and the engine defaults of
  ``VllmFp8/mainVllmFp8_Offline.py``;
- power: where ``.../Offline/performance/power/`` exists (closed power division), the mean of the
  system wall-power readings of ``run_1/spl.txt`` (PTDaemon log of the performance run). This is the
  whole system (CPUs, fans, NICs, ...): kept as a note, never split into GPU power.

Every row is ``holdout`` (nothing is fitted to them) or ``excluded`` with the reason (no accelerator
card, software the project has no profile for, configuration not published, ...).

Usage: python hardware/calibration/derive_mlperf.py V4_1_REPO V5_1_REPO
(git clones or bare git directories of the two repositories; files are read from their HEAD).
"""

from __future__ import annotations

import ast
import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

OUT = Path(__file__).with_name("mlperf_offline.csv")
BENCHES = ("llama2-70b-99", "llama2-70b-99.9")
COLUMNS = ["id", "role", "reason", "version", "commit", "submitter", "system", "benchmark", "accelerator",
           "accelerator_name", "gpus", "nodes", "software", "engine", "tp", "pp", "replicas", "weight_dtype",
           "kv_dtype", "max_batch", "max_tokens", "kv_fraction", "power_limit_w", "output_tokens_per_s", "samples_per_s",
           "mean_output_tokens", "system_power_w", "results_file", "config_file"]
ACCELERATORS = (  # system json accelerator_model_name -> card (first match); None: no card
    (r"GH200", None), (r"H100.*NVL", None), (r"H200.*NVL", None), (r"GB300", None), (r"MI355X", None),
    (r"H100.*SXM", "h100-sxm"), (r"H100.*PCIe", "h100-pcie"), (r"H200.*(SXM|CTS)", "h200"), (r"GB200", "gb200"), (r"B200", "b200"),
    (r"MI300X", "mi300x"), (r"MI325X", "mi325x"), (r"L40S", "l40s"),
)


class Repo:
    """Files at HEAD of a git clone or bare git directory."""

    def __init__(self, path: str, version: str):
        self.path, self.version = path, version
        self.commit = self._git("rev-parse", "HEAD").strip()
        self.files = set(self._git("ls-tree", "-r", "--name-only", "HEAD").splitlines())

    def _git(self, *args) -> str:
        return subprocess.run(["git", "-C", self.path, *args], check=True, capture_output=True, text=True).stdout

    def read(self, name: str) -> str | None:
        return self._git("show", f"HEAD:{name}") if name in self.files else None


def accelerator_card(name: str) -> str | None:
    for pat, card in ACCELERATORS:
        if re.search(pat, name):
            return card
    return None


def summary(text: str) -> tuple[float, float, bool]:
    tok = float(re.search(r"Tokens per second\s*:\s*([\d.]+)", text).group(1))
    sps = float(re.search(r"Samples per second\s*:\s*([\d.]+)", text).group(1))
    return tok, sps, bool(re.search(r"Result is\s*:\s*VALID", text))


def spl_watts(text: str) -> float:
    """Mean system wall power of a PTDaemon log (the first Watts field of each reading)."""
    w = [float(m.group(1)) for m in re.finditer(r"^Time,[^,]*,Watts,([\d.]+)", text, re.M)]
    return sum(w) / len(w) if w else float("nan")


# --------------------------------------------------------------------------- TensorRT-LLM configs
def _literal(node):
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def v51_trt_config(text: str, accuracy: float, maxq: bool) -> dict | None:
    """The EXPORTS entry (a dict of field -> value) for an accuracy target and power setting."""
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "EXPORTS":
            for key, val in zip(node.value.keys, node.value.values):
                src = ast.unparse(key)
                acc = re.search(r"AccuracyTarget\(([\d.]+)\)", src)
                if not acc or abs(float(acc.group(1)) - accuracy) > 1e-9 or ("MaxQ" in src) != maxq:
                    continue
                return {ast.unparse(k).split(".")[-1]: _literal(v) for k, v in zip(val.keys, val.values)}
    return None


def v41_classes(text: str) -> dict[str, dict]:
    """Class name -> (bases, literal attributes) of a v4.1 NVIDIA-style config module."""
    out = {}
    for node in ast.parse(text).body:
        if isinstance(node, ast.ClassDef):
            attrs = {}
            for st in node.body:
                if isinstance(st, ast.Assign) and isinstance(st.targets[0], ast.Name):
                    v = _literal(st.value)
                    attrs[st.targets[0].id] = v if v is not None else ast.unparse(st.value)
            out[node.name] = {"bases": [ast.unparse(b) for b in node.bases], "attrs": attrs}
    return out


def v41_resolve(classes: dict, name: str) -> dict:
    """A class's attributes with those of its bases (in this module) underneath."""
    if name not in classes:
        return {}
    merged = {}
    for b in reversed(classes[name]["bases"]):
        merged.update(v41_resolve(classes, b))
    merged.update(classes[name]["attrs"])
    return merged


def _batch(v):
    """A config's batch size: a number, or a {benchmark: number} mapping."""
    return v.get("llama2-70b") if isinstance(v, dict) else v


def trt_row(repo: Repo, sub: str, system: str, bench: str, card: str) -> tuple[dict, str]:
    accuracy, maxq = (0.999 if bench.endswith("99.9") else 0.99), "MaxQ" in system
    if repo.version == "v5.1":
        base = re.sub(r"_TRT.*$", "", system)
        nv = {"b200": "B200-SXM-180GBx8", "gb200": "GB200-NVL72_GB200-186GB_aarch64x4", "h200": "H200-SXM-141GBx8"}
        for path in (f"closed/{sub}/configs/{system}/Offline/llama2-70b.py",
                     f"closed/{sub}/configs/{base}/Offline/llama2-70b.py",
                     f"closed/NVIDIA/configs/{nv.get(card, '-')}/Offline/llama2-70b.py"):
            text = repo.read(path)
            cfg = v51_trt_config(text, accuracy, maxq) if text else None
            if cfg:
                rt = cfg.get("trtllm_runtime_flags") or {}
                ck = cfg.get("trtllm_checkpoint_flags") or {}
                # no kv_cache_dtype: NVIDIA's ModelOpt fp8 / fp4 checkpoints quantize the KV cache to fp8 too
                kv = ck.get("kv_cache_dtype", "fp8" if cfg.get("precision") in ("fp8", "fp4") else "fp16")
                return {"tp": cfg.get("tensor_parallelism"), "pp": cfg.get("pipeline_parallelism", 1),
                        "weight_dtype": cfg.get("precision"), "kv_dtype": kv,
                        "max_batch": _batch(cfg.get("gpu_batch_size")),
                        "max_tokens": rt.get("max_num_tokens"), "kv_fraction": rt.get("kvcache_free_gpu_mem_frac"),
                        "power_limit_w": cfg.get("power_limit", "")}, path
        return {}, ""
    # v4.1: class-based configs; the class of the accelerator (TP2 pairs on H100, one GPU per engine on H200)
    names = {"h100-sxm": "H100_SXM_80GB_TP2x1", "h200": "H200_SXM_141GB_CTSx1" if "CTS" in system else "H200_SXM_141GBx1"}
    if card not in names:
        return {}, ""
    name = names[card] + ("_MaxQ" if maxq else "")
    for path in (f"closed/{sub}/configs/llama2-70b/Offline/__init__.py", "closed/NVIDIA/configs/llama2-70b/Offline/__init__.py"):
        text = repo.read(path)
        classes = v41_classes(text) if text else {}
        if name not in classes:
            continue
        cfg = v41_resolve(classes, name)
        parent = repo.read(path.replace("/Offline/__init__.py", "/__init__.py")) or ""
        cfg = {**v41_resolve(v41_classes(parent), "GPUBaseConfig"), **cfg}
        return {"tp": cfg.get("tensor_parallelism"), "pp": cfg.get("pipeline_parallelism", 1),
                "weight_dtype": "fp8" if cfg.get("use_fp8") else cfg.get("precision"),
                "kv_dtype": "fp8" if cfg.get("use_fp8") else "fp16",  # fp8 engines quantize the KV cache too
                "max_batch": _batch(cfg.get("gpu_batch_size")),
                "max_tokens": cfg.get("max_num_tokens"), "kv_fraction": cfg.get("kvcache_free_gpu_mem_frac"),
                "power_limit_w": cfg.get("power_limit", "")}, path  # MaxQ runs cap each GPU's power
    return {}, ""


# --------------------------------------------------------------------------- vLLM (ROCm) configs
def vllm_row(repo: Repo, sub: str, bench: str, card: str) -> tuple[dict, str]:
    if repo.version == "v5.1":
        tail = f"harness_llm/models/llama2-70b/offline_{card}.yaml"
        for path in (f"closed/{sub}/code/{bench}/{tail}", f"closed/{sub}/code/{bench}/amd/code/{tail}",
                     f"closed/AMD/code/{bench}/{tail}"):
            text = repo.read(path)
            if text:
                e = (yaml.safe_load(text) or {}).get("vllm_engine_config") or {}
                # kv_cache_dtype left at "auto": the fp8 checkpoint's KV scales; a decode batch of 1,280-2,048
                # sequences of ~600 tokens fits the memory left after 70 GB of weights only with fp8 KV
                return {"tp": e.get("tensor_parallel_size", 1), "pp": 1, "weight_dtype": e.get("quantization"),
                        "kv_dtype": "fp8" if e.get("kv_cache_dtype", "auto") in ("auto", "fp8") else e["kv_cache_dtype"],
                        "max_batch": e.get("max_num_seqs"), "max_tokens": e.get("max_num_batched_tokens"),
                        "kv_fraction": e.get("gpu_memory_utilization")}, path
        return {}, ""
    path = f"closed/AMD/code/{bench}/test_VllmFp8/test_VllmFp8_Offline_perf.sh"
    sh, main = repo.read(path), repo.read(f"closed/AMD/code/{bench}/VllmFp8/mainVllmFp8_Offline.py")
    if not sh or not main:
        return {}, ""
    num = lambda pat, text: float(re.search(pat, text).group(1))
    return {"tp": int(re.search(r"^TP=(\d+)", sh, re.M).group(1)), "pp": 1, "weight_dtype": "fp8",
            "kv_dtype": re.search(r"--kv-cache-dtype (\w+)", sh).group(1),
            "max_batch": int(num(r"max_num_seqs: int = (\d+)", main)),
            "max_tokens": int(num(r"max_num_batched_tokens: int = (\d+)", main)),
            "kv_fraction": num(r"--gpu-memory-utilization ([\d.]+)", sh)}, path


# --------------------------------------------------------------------------- rows
def rows_of(repo: Repo) -> list[dict]:
    pat = re.compile(r"^closed/([^/]+)/results/([^/]+)/(llama2-70b-99(?:\.9)?)/Offline/performance/run_1/"
                     r"mlperf_log_summary\.txt$")
    out = []
    for f in sorted(repo.files):
        m = pat.match(f)
        if not m:
            continue
        sub, system, bench = m.groups()
        tok, sps, valid = summary(repo.read(f))
        sysj = json.loads(repo.read(f"closed/{sub}/systems/{system}.json") or "{}")
        name = str(sysj.get("accelerator_model_name", ""))
        software = " ".join(str(sysj.get(k, "")) for k in ("framework", "other_software_stack"))
        card = accelerator_card(name)
        engine = "trtllm" if "TensorRT" in software else "vllm" if re.search(r"vLLM", software) else ""
        gpus_per_node, nodes = int(sysj.get("accelerators_per_node") or 0), int(sysj.get("number_of_nodes") or 1)
        power_dir = f.replace("run_1/mlperf_log_summary.txt", "power/")
        has_power = any(x.startswith(power_dir) for x in repo.files)
        spl = repo.read(f.replace("mlperf_log_summary.txt", "spl.txt")) if has_power else None
        row = {"id": f"mlperf/{repo.version}/{sub}/{system}/{bench}", "version": repo.version, "commit": repo.commit[:12],
               "submitter": sub, "system": system, "benchmark": bench, "accelerator": card or "",
               "accelerator_name": name, "gpus": gpus_per_node * nodes, "nodes": nodes,
               "software": re.sub(r"\s+", " ", software).strip()[:120], "engine": engine,
               "output_tokens_per_s": tok, "samples_per_s": sps, "mean_output_tokens": round(tok / sps, 2),
               "system_power_w": round(spl_watts(spl), 1) if spl else "", "results_file": f, "config_file": ""}
        cfg, path = {}, ""
        reason = ""
        if not valid:
            reason = "result not VALID"
        elif card is None:
            reason = f"no accelerator card for {name or 'an unnamed accelerator'}"
        elif "MangoBoost" in sub or "LLMBoost" in software:
            reason = "MangoBoost LLMBoost serving stack (multi-node load balancer over its own engine build): no profile"
        elif not engine:
            reason = f"software without an engine profile here ({row['software'][:60]})"
        elif engine == "trtllm":
            cfg, path = trt_row(repo, sub, system, bench, card)
        else:
            cfg, path = vllm_row(repo, sub, bench, card)
        if not reason and not cfg:
            reason = "engine configuration (tensor parallel degree, batch cap) not found in the published configs"
        if cfg and not reason:
            if not cfg.get("tp") or not cfg.get("max_batch") or not cfg.get("weight_dtype"):
                reason = f"configuration incomplete in {path}"
            elif row["gpus"] % (cfg["tp"] * cfg.get("pp", 1)):
                reason = f"{row['gpus']} GPUs are not a multiple of tp x pp = {cfg['tp']} x {cfg['pp']}"
        row.update({k: cfg.get(k, "") for k in ("tp", "pp", "weight_dtype", "kv_dtype", "max_batch", "max_tokens",
                                                "kv_fraction", "power_limit_w")})
        row["config_file"] = path
        row["replicas"] = row["gpus"] // (cfg["tp"] * cfg.get("pp", 1)) if cfg and not reason else ""
        row["role"], row["reason"] = ("excluded", reason) if reason else ("holdout", "")
        out.append(row)
    return out


def mark_repeats(rows: list[dict]) -> list[dict]:
    """Mark as ``excluded`` every held-out ``99.9`` row whose log figures (tokens/s and samples/s) equal
    the held-out ``99`` row of the same system and round: one run filed for both accuracy targets is one
    measurement, and counting it twice would weigh those systems double in the held-out means."""
    first = {(r["version"], r["submitter"], r["system"], str(r["output_tokens_per_s"]), str(r["samples_per_s"])): r
             for r in rows if r["role"] == "holdout" and r["benchmark"] == "llama2-70b-99"}
    for r in rows:
        key = (r["version"], r["submitter"], r["system"], str(r["output_tokens_per_s"]), str(r["samples_per_s"]))
        if r["role"] == "holdout" and r["benchmark"] == "llama2-70b-99.9" and key in first:
            r["role"], r["reason"] = "excluded", f"the same run as {first[key]['id']} (identical log figures)"
    return rows


def main(v41: str, v51: str) -> None:
    rows = mark_repeats(rows_of(Repo(v41, "v4.1")) + rows_of(Repo(v51, "v5.1")))
    with open(OUT, "w", newline="") as fh:
        w = csv.DictWriter(fh, COLUMNS)
        w.writeheader()
        w.writerows(rows)
    held = [r for r in rows if r["role"] == "holdout"]
    print(f"wrote {len(rows)} rows to {OUT} ({len(held)} holdout)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
